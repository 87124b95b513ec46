"""Undo the spellings attackers use to slip past a text classifier, before it counts n-grams.

``normalise(text)`` gives the lower-cased text with invisible characters removed, compatibility forms and
look-alike letters folded to ASCII, and then, after the text, what the obfuscations hide: leetspeak spelled out
(``1gn0re`` -> ``ignore``), letters spread out by spaces or punctuation joined (``i g n o r e``), and
base64, hex and (when the text mentions it) rot13 segments decoded. The classifier sees both the text and what
it hides, so a model that learned ``ignore previous instructions`` also scores its disguises.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata

__all__ = ["normalise"]

# Zero-width and other invisible format characters (Unicode category Cf), and the soft hyphen.
_INVISIBLE = re.compile(
    r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]"
)
# Cyrillic and Greek letters that look like Latin ones (NFKC keeps them apart).
_HOMOGLYPHS = str.maketrans(
    "аеорсхуіјѕԁɡһκνтмвнΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοριτυχ",
    "aeopcxyijsdghkvtmbhabezhikmnoptyxaopitux",
)
_LEET = str.maketrans("013457@$!|", "oieastasil")
_LEET_WORD = re.compile(r"\b(?=\w*[a-z])(?=\w*[0134579@$])[\w@$]{3,20}\b")  # longer: an id or base64
_SPREAD = re.compile(r"\b(?:\w[ .\-_*]{1,2}){3,}\w\b")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){8,}\b")
_ROT13 = re.compile(r"rot[\s\-_]?13|caesar", re.IGNORECASE)
_MAX_DECODED = 4  # segments decoded per text: a long document of base64 is data, not a disguise


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return text if text and letters >= 0.8 * len(text) else None


def _decoded(text: str) -> list[str]:
    out: list[str] = []
    for match in _BASE64.findall(text)[:_MAX_DECODED]:
        try:
            found = _printable(base64.b64decode(match + "=" * (-len(match) % 4), validate=True))
        except (binascii.Error, ValueError):
            found = None
        if found:
            out.append(found)
    for match in _HEX.findall(text)[:_MAX_DECODED]:
        try:
            found = _printable(bytes.fromhex(re.sub(r"[ :]", "", match)))
        except ValueError:
            found = None
        if found:
            out.append(found)
    if _ROT13.search(text):
        out.append(codecs.encode(text, "rot13"))
    return out


def normalise(text: str) -> str:
    """The folded, lower-cased text, followed by what its obfuscations spell (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)).lower().translate(_HOMOGLYPHS)
    extra = [w.translate(_LEET) for w in _LEET_WORD.findall(folded)]
    extra += [re.sub(r"[ .\-_*]", "", m) for m in _SPREAD.findall(folded)]
    extra += [d.lower() for d in _decoded(unicodedata.normalize("NFKC", text))]
    return folded if not extra else folded + "\n" + " ".join(extra)

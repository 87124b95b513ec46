-- Chat: conversations and their messages, projections of the chat.* events.
CREATE TABLE conversations (
    id VARCHAR PRIMARY KEY,            -- the id of the chat.conversation.started event
    "user" VARCHAR NOT NULL,
    title VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    messages INTEGER NOT NULL
);
CREATE TABLE chat_messages (
    id VARCHAR PRIMARY KEY,            -- the id of the chat.message.* event
    conversation VARCHAR NOT NULL,
    position INTEGER NOT NULL,         -- 1, 2, ... within the conversation
    kind VARCHAR NOT NULL,             -- received | responded | refused | failed
    author VARCHAR NOT NULL,           -- the user, or the responder's name
    text VARCHAR NOT NULL,             -- as recorded (secrets masked)
    parent_id VARCHAR,                 -- a reply's parent is the question
    responder VARCHAR,
    model VARCHAR,
    settings VARCHAR,                  -- JSON object (replies only)
    citations VARCHAR,                 -- JSON array (replies only)
    ts TIMESTAMPTZ NOT NULL
);

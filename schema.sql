-- The marketplace's tables, in three parts: the customer database (accounts,
-- sessions), the product database (items, carts, purchases, feedback) and
-- the payments database of the financial-transactions service.
-- The services apply each part to its own database when they start; the
-- "-- database:" lines mark where a part begins.  Applying the whole file to
-- one database (psql -f schema.sql) also works.  Applying it again changes
-- nothing.

-- database: customer

CREATE TABLE IF NOT EXISTS accounts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('buyer', 'seller')),
    username      text NOT NULL,
    name          text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (role, username)
);

-- A session is filed under the SHA-256 of its id, so a copy of this table
-- opens no session.
CREATE TABLE IF NOT EXISTS sessions (
    key        text PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('buyer', 'seller')),
    account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions (last_seen);

-- Marks a live session of a role as just used, unless it was marked in the
-- last second: the session checks call it from within their statement
-- (marketplace/customerdb.py), so a session costs a write at most once a
-- second, and a check that needs no write runs no UPDATE at all.
CREATE OR REPLACE FUNCTION touch_session(session_key text, session_role text, timeout float8)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET last_seen = now()
    WHERE key = session_key AND role = session_role
      AND last_seen > now() - timeout * interval '1 second'
      AND last_seen < now() - interval '1 second';
    RETURN true;
END
$$;

-- Failed logins of each username, per role (marketplace/limits.py): the
-- attempts that did not succeed since window_start.  Login answers
-- RATE_LIMITED while a window holds too many; rows of windows that have
-- passed are swept away.  Usernames need not have an account here.
CREATE TABLE IF NOT EXISTS login_failures (
    role         text NOT NULL,
    username     text NOT NULL,
    window_start timestamptz NOT NULL DEFAULT now(),
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (role, username)
);
CREATE INDEX IF NOT EXISTS login_failures_window ON login_failures (window_start);

-- database: product

CREATE TABLE IF NOT EXISTS items (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seller_id   bigint NOT NULL,
    name        text NOT NULL,
    category    integer NOT NULL CHECK (category >= 0),
    keywords    text[] NOT NULL DEFAULT '{}',
    condition   text NOT NULL CHECK (condition IN ('new', 'used')),
    price       numeric(12, 2) NOT NULL CHECK (price >= 0),
    quantity    integer NOT NULL CHECK (quantity >= 0),
    units_sold  integer NOT NULL DEFAULT 0 CHECK (units_sold >= 0),
    thumbs_up   integer NOT NULL DEFAULT 0,
    thumbs_down integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS items_seller ON items (seller_id);
CREATE INDEX IF NOT EXISTS items_on_sale ON items (category) WHERE quantity > 0;
CREATE INDEX IF NOT EXISTS items_keywords ON items USING gin (keywords);

-- The active cart of each buyer session, filed under the session's key.
CREATE TABLE IF NOT EXISTS active_cart_lines (
    session_key text NOT NULL,
    buyer_id    bigint NOT NULL,
    item_id     bigint NOT NULL REFERENCES items (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_key, item_id)
);
CREATE INDEX IF NOT EXISTS active_cart_lines_added ON active_cart_lines (added_at);

-- The one saved cart of each buyer.
CREATE TABLE IF NOT EXISTS saved_cart_lines (
    buyer_id bigint NOT NULL,
    item_id  bigint NOT NULL REFERENCES items (id),
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (buyer_id, item_id)
);

-- Purchases (see marketplace/purchasedb.py for their states).  A pending
-- purchase holds its units off sale until it is settled; the partial unique
-- index files it under the buyer's idempotency key, which an aborted
-- purchase frees for another try.  payment_key is the idempotency key of
-- its payment at the financial-transactions service: fresh for every try.
CREATE TABLE IF NOT EXISTS purchases (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    buyer_id         bigint NOT NULL,
    idempotency_key  text NOT NULL,
    session_key      text NOT NULL,
    payment_key      text NOT NULL UNIQUE DEFAULT gen_random_uuid()::text,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'completed', 'declined', 'aborted')),
    total            numeric(20, 2) NOT NULL DEFAULT 0,
    authorization_id text,
    reason           text,
    void_needed      boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS purchases_idempotency_key
    ON purchases (buyer_id, idempotency_key) WHERE state <> 'aborted';
CREATE INDEX IF NOT EXISTS purchases_pending ON purchases (created_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS purchases_void_needed ON purchases (id) WHERE void_needed;

-- What a purchase took: the units of each item and the price paid for one.
CREATE TABLE IF NOT EXISTS purchase_lines (
    purchase_id bigint NOT NULL REFERENCES purchases (id),
    item_id     bigint NOT NULL REFERENCES items (id),
    category    integer NOT NULL,
    item_name   text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    price       numeric(12, 2) NOT NULL,
    PRIMARY KEY (purchase_id, item_id)
);
CREATE INDEX IF NOT EXISTS purchase_lines_item ON purchase_lines (item_id);

-- One vote per buyer and item; items.thumbs_up and thumbs_down are their
-- counts, kept in the same transaction as each vote.
CREATE TABLE IF NOT EXISTS feedback (
    buyer_id  bigint NOT NULL,
    item_id   bigint NOT NULL REFERENCES items (id),
    thumbs_up boolean NOT NULL,
    voted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (buyer_id, item_id)
);
CREATE INDEX IF NOT EXISTS feedback_item ON feedback (item_id);

-- database: payments

-- Card authorisations of the financial-transactions service, filed under
-- the caller's idempotency key.  Only the last four digits of a card are
-- kept, and never its security code.  A row with voided_at set and no
-- amount bars a key that was voided before any request used it.
CREATE TABLE IF NOT EXISTS authorizations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    idempotency_key text NOT NULL UNIQUE,
    name            text,
    card_last_four  text CHECK (length(card_last_four) <= 4),
    amount          numeric(20, 2),
    approved        boolean NOT NULL,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    voided_at       timestamptz
);

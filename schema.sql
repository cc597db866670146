-- The marketplace's tables, in two parts: the customer database (accounts,
-- sessions) and the product database (items, carts, purchases, feedback).
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

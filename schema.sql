-- The marketplace's tables, in three parts: the customer database (accounts,
-- sessions), the product database (items, carts, purchases, feedback) and
-- the payments database of the financial-transactions service.
-- The services apply each part to its own database when they start; the
-- "-- database:" lines mark where a part begins (or goes on); a line that
-- names several parts ("-- database: customer, product") begins text that
-- each of them has.  Applying the whole file to one database (psql -f
-- schema.sql) also works.  Applying it again changes nothing.

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
-- (marketplace/customer/customerdb.py), so a session costs a write at most once a
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

-- Failed logins of each username, per role (marketplace/customer/accounts.py):
-- the attempts that did not succeed since window_start, from every address
-- (login_failures: enough of them slow the username's Logins down) and from
-- each source address (login_failures_by_source: enough of them and Login
-- answers RATE_LIMITED to that address).  Rows of windows that have passed
-- are swept away.  Usernames need not have an account here.
CREATE TABLE IF NOT EXISTS login_failures (
    role         text NOT NULL,
    username     text NOT NULL,
    window_start timestamptz NOT NULL DEFAULT now(),
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (role, username)
);
CREATE INDEX IF NOT EXISTS login_failures_window ON login_failures (window_start);
CREATE TABLE IF NOT EXISTS login_failures_by_source (
    role         text NOT NULL,
    username     text NOT NULL,
    source       text NOT NULL,
    window_start timestamptz NOT NULL DEFAULT now(),
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (role, username, source)
);
CREATE INDEX IF NOT EXISTS login_failures_by_source_window
    ON login_failures_by_source (window_start);

-- A token bucket per kind of request (sign-up, username check) and source
-- address (marketplace/customer/customerdb.py take_token): tokens left as of
-- updated_at, and whether the last request got one.  Buckets untouched for
-- longer than any takes to fill up are swept away.  (The fixed-window
-- counts of the first version, signups, are gone.)
CREATE TABLE IF NOT EXISTS rate_buckets (
    kind       text NOT NULL,
    source     text NOT NULL,
    tokens     float8 NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    granted    boolean NOT NULL DEFAULT true,
    PRIMARY KEY (kind, source)
);
DROP TABLE IF EXISTS signups;

-- Usernames are kept in their normal form (marketplace/customer/identities.py: NFKC,
-- case-folded), so "admin" and "ADMIN" are one account.  Accounts made
-- before that keep working: a plain-ASCII username is folded here (for
-- ASCII, lower() is that normal form) unless another account of the role
-- already has the folded name or an older one folds to it too; every other
-- one keeps its name as it was and still logs in with that exact spelling
-- (customerdb.find_login).  Applying this again changes nothing more.
UPDATE accounts AS a SET username = lower(a.username)
WHERE a.username <> lower(a.username)
  AND a.username ~ '^[!-~]+$'
  AND NOT EXISTS (
      SELECT 1 FROM accounts AS b
      WHERE b.role = a.role AND b.id <> a.id
        AND lower(b.username) = lower(a.username)
        AND (b.username = lower(b.username) OR b.id < a.id)
  );

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

-- Search (marketplace/product/apisql.py, SEARCH_*; docs/PERFORMANCE.md, "Catalog
-- size").  Without keywords the first page is read straight off this index,
-- in ranking order: net votes (as thumbs_down - thumbs_up, so that every
-- column ascends and a keyset cursor is one row comparison), price, id.
CREATE INDEX IF NOT EXISTS items_ranked ON items
    (category, (thumbs_down - thumbs_up), price, id) WHERE quantity > 0;
-- Replaced by items_ranked and item_keywords.
DROP INDEX IF EXISTS items_on_sale;
DROP INDEX IF EXISTS items_keywords;

-- Whether this database's table TABLE_NAME has a column COLUMN_NAME: search's
-- tables lacking one that the code now reads are made again (below).
CREATE OR REPLACE FUNCTION has_column(table_name text, column_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT FROM information_schema.columns AS c
        WHERE c.table_schema = current_schema() AND c.table_name = $1
          AND c.column_name = $2)
$$;

-- The bigrams (letter pairs) of a lower-cased name, one bit of 64 each: a
-- name can hold a word only if it has every bit of the word's, a test much
-- cheaper than looking for the word (strpos), which a search with several
-- keywords does on every row of their lists (product/apisql.py,
-- _OTHER_NAMED).  Made from code points alone, so that it stays the same
-- across versions and hosts.
CREATE OR REPLACE FUNCTION bigrams(lowered text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bigrams bigint := 0;
    previous integer;
    code integer;
    letter text;
BEGIN
    FOREACH letter IN ARRAY string_to_array(lowered, NULL) LOOP
        code := ascii(letter);
        IF previous IS NOT NULL THEN
            -- The pair's bit: a multiplicative hash of its two code points.
            bigrams := bigrams
                | (1::bigint << ((((previous * 31 + code) * 2654435761) >> 20) & 63)::integer);
        END IF;
        previous := code;
    END LOOP;
    RETURN bigrams;
END
$$;

-- One row per keyword of each item on sale: the per-keyword candidate lists
-- of a search with keywords.  A copy of the item's ranking keys, kept by the
-- triggers below in the statement that changes the item: whether the
-- keyword occurs in the lower-cased name (name_miss false: it does, worth
-- the extra half), thumbs_down - thumbs_up, price, and the lower-cased name
-- and its bigrams (for the other query keywords' halves).  A one-keyword
-- search reads its page off item_keywords_ranked in ranking order; a search
-- with several keywords scores only the rows of its keywords in its
-- category.  The triggers find an item's rows by item_keywords_item.  Made
-- from the items when it is first made, and made again for a database whose
-- rows lack the bigrams; writes of items wait meanwhile, so that none is
-- missed.
DO $$
BEGIN
    IF NOT has_column('item_keywords', 'name_bigrams') THEN
        LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE;
        DROP TABLE IF EXISTS item_keywords;
        CREATE TABLE item_keywords (
            item_id      bigint NOT NULL,
            keyword      text NOT NULL,
            category     integer NOT NULL,
            name_miss    boolean NOT NULL,
            votes        integer NOT NULL,
            price        numeric(12, 2) NOT NULL,
            name         text NOT NULL,
            -- Every bit for a row written by code that knew no bigrams (a
            -- daemon not yet upgraded): its name is looked at by strpos.
            name_bigrams bigint NOT NULL DEFAULT -1
        );
        INSERT INTO item_keywords
            (item_id, keyword, category, name_miss, votes, price, name, name_bigrams)
        SELECT DISTINCT ON (i.id, k) i.id, k, i.category, strpos(i.name, k) = 0,
               i.votes, i.price, i.name, i.bigrams
        FROM (SELECT id, category, keywords, thumbs_down - thumbs_up AS votes, price,
                     lower(name) AS name, bigrams(lower(name)) AS bigrams
              FROM items WHERE quantity > 0 OFFSET 0) AS i,  -- (bigrams once an item)
             unnest(i.keywords) AS k;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS item_keywords_ranked ON item_keywords
    (category, keyword, name_miss, votes, price, item_id) INCLUDE (name, name_bigrams);
CREATE INDEX IF NOT EXISTS item_keywords_item ON item_keywords (item_id);

-- One row per pair of keywords of each item on sale (first < second): the
-- items that share two or more of a search's keywords, found without
-- reading the keywords' whole lists.  Each row carries what scores the item
-- for any query (its keywords and lower-cased name) and how many of the
-- pair's two keywords its name misses (0 to 2).  item_keyword_pairs_ranked
-- keeps each pair's list in the order of those misses, then the tie-breaks
-- of the ranking, so that a search reads the best of its pairs' lists first
-- and stops once no row it has not read can reach its page
-- (product/apisql.py, SEARCH_MANY).  Kept by the same triggers as
-- item_keywords; filled here from the items when it is first made, and made
-- again from them for a database whose rows lack the misses and keywords
-- (writes of items wait meanwhile, as for item_keywords).
DO $$
BEGIN
    IF NOT has_column('item_keyword_pairs', 'keywords') THEN
        LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE;
        DROP TABLE IF EXISTS item_keyword_pairs;
        CREATE TABLE item_keyword_pairs (
            item_id  bigint NOT NULL,
            category integer NOT NULL,
            first    text NOT NULL,
            second   text NOT NULL,
            misses   smallint NOT NULL,
            votes    integer NOT NULL,
            price    numeric(12, 2) NOT NULL,
            name     text NOT NULL,
            keywords text[] NOT NULL
        );
        INSERT INTO item_keyword_pairs
            (item_id, category, first, second, misses, votes, price, name, keywords)
        SELECT DISTINCT i.id, i.category, a, b,
               (strpos(lower(i.name), a) = 0)::int + (strpos(lower(i.name), b) = 0)::int,
               i.thumbs_down - i.thumbs_up, i.price, lower(i.name), i.keywords
        FROM items AS i, unnest(i.keywords) AS a, unnest(i.keywords) AS b
        WHERE a < b AND i.quantity > 0;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS item_keyword_pairs_ranked ON item_keyword_pairs
    (category, first, second, misses, votes, price, item_id) INCLUDE (name, keywords);
CREATE INDEX IF NOT EXISTS item_keyword_pairs_item ON item_keyword_pairs (item_id);

-- The rows of item_keywords of the items of a statement, from its
-- transition table (so a bulk INSERT or COPY fills them in one go).
CREATE OR REPLACE FUNCTION item_keywords_of_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_keywords
        (item_id, keyword, category, name_miss, votes, price, name, name_bigrams)
    SELECT DISTINCT ON (n.id, k) n.id, k, n.category, strpos(n.name, k) = 0,
           n.votes, n.price, n.name, n.bigrams
    FROM (SELECT id, category, keywords, thumbs_down - thumbs_up AS votes, price,
                 lower(name) AS name, bigrams(lower(name)) AS bigrams
          FROM new_items WHERE quantity > 0 OFFSET 0) AS n,  -- (bigrams once an item)
         unnest(n.keywords) AS k;
    INSERT INTO item_keyword_pairs
        (item_id, category, first, second, misses, votes, price, name, keywords)
    SELECT DISTINCT n.id, n.category, a, b,
           (strpos(lower(n.name), a) = 0)::int + (strpos(lower(n.name), b) = 0)::int,
           n.thumbs_down - n.thumbs_up, n.price, lower(n.name), n.keywords
    FROM new_items AS n, unnest(n.keywords) AS a, unnest(n.keywords) AS b
    WHERE a < b AND n.quantity > 0;
    RETURN NULL;
END
$$;

-- After an update of one item: its price or votes follow into its rows; a
-- change of name, keywords or category, or of being on sale, writes them
-- anew.  Stock changes that keep an item on sale do not come here (WHEN).
CREATE OR REPLACE FUNCTION item_keywords_of_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_bigrams bigint;
BEGIN
    IF (NEW.quantity > 0) = (OLD.quantity > 0) AND NEW.name = OLD.name
       AND NEW.keywords = OLD.keywords AND NEW.category = OLD.category THEN
        UPDATE item_keywords
        SET votes = NEW.thumbs_down - NEW.thumbs_up, price = NEW.price
        WHERE item_id = OLD.id;
        UPDATE item_keyword_pairs
        SET votes = NEW.thumbs_down - NEW.thumbs_up, price = NEW.price
        WHERE item_id = OLD.id;
        RETURN NULL;
    END IF;
    DELETE FROM item_keywords WHERE item_id = OLD.id;
    DELETE FROM item_keyword_pairs WHERE item_id = OLD.id;
    IF NEW.quantity > 0 THEN
        new_bigrams := bigrams(lower(NEW.name));  -- (once, not once a keyword)
        INSERT INTO item_keywords
            (item_id, keyword, category, name_miss, votes, price, name, name_bigrams)
        SELECT DISTINCT ON (k) NEW.id, k, NEW.category, strpos(lower(NEW.name), k) = 0,
               NEW.thumbs_down - NEW.thumbs_up, NEW.price, lower(NEW.name), new_bigrams
        FROM unnest(NEW.keywords) AS k;
        INSERT INTO item_keyword_pairs
            (item_id, category, first, second, misses, votes, price, name, keywords)
        SELECT DISTINCT NEW.id, NEW.category, a, b,
               (strpos(lower(NEW.name), a) = 0)::int + (strpos(lower(NEW.name), b) = 0)::int,
               NEW.thumbs_down - NEW.thumbs_up, NEW.price, lower(NEW.name), NEW.keywords
        FROM unnest(NEW.keywords) AS a, unnest(NEW.keywords) AS b
        WHERE a < b;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION item_keywords_of_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM item_keywords WHERE item_id IN (SELECT id FROM old_items);
    DELETE FROM item_keyword_pairs WHERE item_id IN (SELECT id FROM old_items);
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'items_keywords_insert') THEN
        CREATE TRIGGER items_keywords_insert AFTER INSERT ON items
            REFERENCING NEW TABLE AS new_items
            FOR EACH STATEMENT EXECUTE FUNCTION item_keywords_of_new();
        CREATE TRIGGER items_keywords_update AFTER UPDATE ON items
            FOR EACH ROW WHEN (
                (NEW.quantity > 0) <> (OLD.quantity > 0) OR NEW.price <> OLD.price
                OR NEW.thumbs_down - NEW.thumbs_up <> OLD.thumbs_down - OLD.thumbs_up
                OR NEW.name <> OLD.name OR NEW.keywords <> OLD.keywords
                OR NEW.category <> OLD.category)
            EXECUTE FUNCTION item_keywords_of_update();
        CREATE TRIGGER items_keywords_delete AFTER DELETE ON items
            REFERENCING OLD TABLE AS old_items
            FOR EACH STATEMENT EXECUTE FUNCTION item_keywords_of_delete();
    END IF;
END
$$;

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

-- Purchases (see marketplace/product/purchasedb.py for their states).  A pending
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

-- database: customer, product

-- Request keys (PROTOCOL.md, Request keys): the answer of each write that
-- came with a request_key, filed under the SHA-256 of its scope (role and
-- session key, or role and username for CreateAccount) and the key
-- (marketplace/postgres/requestkeys.py; frame/dispatch.py, key_id), and
-- written in the same statement or transaction as the change itself.  A
-- repeat finds the key taken (the primary key), changes nothing and gets
-- this answer; its request (the SHA-256 of the API and payload) must
-- match.  Both digests are 32 raw bytes: the row and its index entry are
-- about 110 and 70 bytes smaller than with scope, key and hex digests as
-- text, and so is the WAL of each keyed write (docs/PERFORMANCE.md).  The
-- answer is the payload's JSON, or for a cart a JSON array of its lines
-- [item id, quantity, price], a few bytes a line (marketplace/product/
-- apisql.py, FILED_ANSWER).  Swept once older than requestkeys.keep_for,
-- found by the BRIN index; created_at is the second the key was filed in
-- (rounded down), so that the keys of one second share one value and the
-- BRIN summary of a block range is widened (a WAL record) once a second
-- rather than by every key.
CREATE TABLE IF NOT EXISTS request_answers (
    id         bytea PRIMARY KEY,
    request    bytea NOT NULL,
    answer     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT date_trunc('second', now())
);
CREATE INDEX IF NOT EXISTS request_answers_created ON request_answers USING brin (created_at);
-- Upgrade: the keys of the code before (request_keys: scope, key and hex
-- digests as text) are copied here, so that a repeat of a request answered
-- before the upgrade still gets its first answer.  The older table is left
-- to the daemons of the older code that still run in a rolling upgrade
-- (their statements name it) and swept by the newer ones
-- (requestkeys.sweep); it may be dropped once none of the older code runs.
-- A key first used on one and repeated on the other after this copy is not
-- found there: that repeat runs again.
DO $$
BEGIN
    IF to_regclass('request_keys') IS NOT NULL THEN
        INSERT INTO request_answers (id, request, answer, created_at)
        SELECT sha256(convert_to(scope, 'UTF8') || '\x00'::bytea || convert_to(key, 'UTF8')),
               decode(request, 'hex'),
               answer, created_at
        FROM request_keys WHERE answer <> ''
        ON CONFLICT (id) DO NOTHING;
    END IF;
END $$;

-- database: product

-- The keyed writes of each account in its current window (requestkeys.py,
-- KEY_WINDOW): beyond its share (--request-keys-per-minute) a keyed write
-- is RATE_LIMITED, which bounds the rows one account's keys can fill.
-- Rows of windows that have passed are swept away.  Unlogged: a count is
-- an update of this row in every keyed write, which in WAL (a row lock
-- and an update record, about 125 bytes) cost as much as the key's own
-- row; unlogged, it costs none.  A crash empties the table, and a standby
-- that takes over starts with it empty: the counts of the window then
-- start again from zero, so an account may make up to twice its share of
-- keyed writes in that one window.  A database made by the code before
-- has it logged: it is made unlogged once (a rewrite of a small table).
CREATE UNLOGGED TABLE IF NOT EXISTS request_key_counts (
    role         text NOT NULL,
    account_id   bigint NOT NULL,
    window_start timestamptz NOT NULL DEFAULT now(),
    keys         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (role, account_id)
);
DO $$
BEGIN
    IF (SELECT relpersistence FROM pg_class WHERE oid = 'request_key_counts'::regclass) = 'p' THEN
        ALTER TABLE request_key_counts SET UNLOGGED;
    END IF;
END $$;

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

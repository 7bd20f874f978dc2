-- Trading data, one shape for imports and agents: strategies with a returns or equity
-- series, orders, their fills, closed trades, feed heartbeats; daily bars of symbols.
CREATE TABLE strategies (
    name TEXT PRIMARY KEY,
    -- 'import' or 'agent'
    source TEXT NOT NULL,
    -- 'returns' or 'equity'; NULL until it has a series
    series_kind TEXT,
    feed_interval_ms INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE strategy_series (
    strategy TEXT NOT NULL REFERENCES strategies (name) ON DELETE CASCADE,
    t_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (strategy, t_ms)
) WITHOUT ROWID;

CREATE TABLE orders (
    strategy TEXT NOT NULL REFERENCES strategies (name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity REAL NOT NULL,
    order_type TEXT NOT NULL,
    limit_price REAL,
    arrival_price REAL,
    decision_ms INTEGER NOT NULL,
    submit_ms INTEGER NOT NULL,
    ack_ms INTEGER,
    state TEXT NOT NULL,
    reject_reason TEXT,
    simulated INTEGER NOT NULL,
    PRIMARY KEY (strategy, id)
);
CREATE INDEX orders_submit ON orders (submit_ms);

CREATE TABLE fills (
    seq INTEGER PRIMARY KEY,
    strategy TEXT NOT NULL,
    order_id TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    quantity REAL NOT NULL,
    price REAL NOT NULL,
    fee REAL NOT NULL,
    simulated INTEGER NOT NULL,
    FOREIGN KEY (strategy, order_id) REFERENCES orders (strategy, id) ON DELETE CASCADE
);
CREATE INDEX fills_order ON fills (strategy, order_id);

CREATE TABLE trades (
    strategy TEXT NOT NULL REFERENCES strategies (name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity REAL NOT NULL,
    entry_ms INTEGER NOT NULL,
    exit_ms INTEGER NOT NULL,
    entry_price REAL NOT NULL,
    exit_price REAL NOT NULL,
    pnl REAL NOT NULL,
    fees REAL NOT NULL,
    simulated INTEGER NOT NULL,
    PRIMARY KEY (strategy, id)
);

CREATE TABLE heartbeats (
    strategy TEXT NOT NULL REFERENCES strategies (name) ON DELETE CASCADE,
    t_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (strategy, t_ms, kind)
) WITHOUT ROWID;

CREATE TABLE symbols (
    symbol TEXT PRIMARY KEY,
    -- 'bundled' or 'import'
    source TEXT NOT NULL
);

CREATE TABLE bars (
    symbol TEXT NOT NULL REFERENCES symbols (symbol) ON DELETE CASCADE,
    day INTEGER NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    adj_close REAL NOT NULL,
    volume REAL NOT NULL,
    PRIMARY KEY (symbol, day)
) WITHOUT ROWID;

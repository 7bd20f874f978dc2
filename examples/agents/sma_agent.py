#!/usr/bin/env python3
"""A custom quantbox agent: any program that prints the agent event protocol
(docs/agent-protocol.md) on stdout is one. This one reads daily bars as protocol `bar`
events on stdin (e.g. `quantbox agent bars --symbols AAPL ... | python3 sma_agent.py`),
trades a moving-average crossover on the first symbol, and simulates its own fills
naively (at the next bar's open, no slippage, a flat fee) — a real agent would talk to
its broker here. Standard library only.

Settings come from the environment run_e2b_agent sets: QUANTBOX_AGENT_CAPITAL and
QUANTBOX_AGENT_PARAMS (JSON: {"fast": 10, "slow": 30}).
"""

import json
import os
import sys
from datetime import datetime, timezone


def emit(event: dict) -> None:
    event = {"v": 1, **event}
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")


def main() -> int:
    params = json.loads(os.environ.get("QUANTBOX_AGENT_PARAMS") or "{}")
    fast, slow = int(params.get("fast", 10)), int(params.get("slow", 30))
    cash = float(os.environ.get("QUANTBOX_AGENT_CAPITAL") or 100000)
    fee = 1.0
    shares = 0
    closes: list[float] = []
    pending = None  # (order id, side, quantity, decided at, arrival price)
    n_orders = n_fills = n_bars = 0
    last_t = None
    equity = cash
    for line in sys.stdin:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("type") != "bar":
            continue
        n_bars += 1
        t, price_open, close = ev["t"], float(ev["open"]), float(ev["close"])
        symbol = ev["symbol"]
        emit(ev)
        last_t = t
        if pending is not None:
            oid, side, qty, _, _ = pending
            cost = qty * price_open
            if side == "buy" and cost + fee > cash:
                emit({"type": "reject", "t": t, "order_id": oid, "reason": "insufficient cash"})
            else:
                emit({"type": "ack", "t": t, "order_id": oid})
                emit({"type": "fill", "t": t, "order_id": oid, "quantity": qty, "price": price_open, "fee": fee})
                n_fills += 1
                if side == "buy":
                    cash -= cost + fee
                    shares += qty
                else:
                    cash += cost - fee
                    shares -= qty
            pending = None
        closes.append(close)
        equity = cash + shares * close
        emit({"type": "equity", "t": t, "equity": equity, "cash": cash, "positions_value": shares * close})
        if len(closes) >= slow:
            long = sum(closes[-fast:]) / fast > sum(closes[-slow:]) / slow
            if long and shares == 0:
                qty = int(cash * 0.95 // close)
                if qty > 0:
                    n_orders += 1
                    pending = (f"o{n_orders}", "buy", qty, t, close)
            elif not long and shares > 0:
                n_orders += 1
                pending = (f"o{n_orders}", "sell", shares, t, close)
            if pending is not None:
                oid, side, qty, decided, arrival = pending
                emit({"type": "order", "t": t, "id": oid, "symbol": symbol, "side": side,
                      "quantity": qty, "order_type": "market", "arrival_price": arrival, "decision_t": decided})
    start = float(os.environ.get("QUANTBOX_AGENT_CAPITAL") or 100000)
    emit({"type": "done", "t": last_t or datetime.now(timezone.utc).isoformat(), "status": "completed",
          "summary": {"bars": n_bars, "orders": n_orders, "fills": n_fills, "rejects": 0,
                      "final_equity": equity, "total_return": equity / start - 1}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

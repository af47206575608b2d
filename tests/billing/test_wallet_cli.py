"""``kraken wallet topup|balance|transactions`` as an operator runs them (real subprocesses)."""
from __future__ import annotations

import json
import subprocess
import sys


def kraken(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "kraken.toml"
    if not cfg.exists():
        cfg.write_text(f'[store]\npath = "{tmp_path / "kraken.db"}"\n')
    return subprocess.run([sys.executable, "-m", "kraken", "wallet", *args, "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_topup_balance_and_transactions(tmp_path):
    first = kraken(tmp_path, "topup", "cus_a", "12.50", "--ref", "inv-1")
    assert first.returncode == 0, first.stderr
    row = json.loads(first.stdout)
    assert (row["amount_micros"], row["balance_after_micros"], row["duplicate"]) == (12_500_000, 12_500_000, False)
    again = kraken(tmp_path, "topup", "cus_a", "12.50", "--ref", "inv-1")
    assert json.loads(again.stdout)["duplicate"] is True
    assert kraken(tmp_path, "topup", "cus_a", "-2.5", "--kind", "adjustment").returncode == 0

    bal = json.loads(kraken(tmp_path, "balance", "cus_a").stdout)
    assert bal == {"customer_id": "cus_a", "balance_micros": 10_000_000, "balance_usd": "10.000000"}
    txs = [json.loads(line) for line in kraken(tmp_path, "transactions", "cus_a").stdout.splitlines()]
    assert [(t["kind"], t["amount_usd"]) for t in txs] == [("adjustment", "-2.500000"), ("top_up", "12.500000")]


def test_refusals_exit_2_with_a_clear_message(tmp_path):
    over = kraken(tmp_path, "topup", "cus_a", "-1", "--kind", "refund")
    assert over.returncode == 2 and "insufficient balance" in over.stderr
    tiny = kraken(tmp_path, "topup", "cus_a", "0.0000001")
    assert tiny.returncode == 2 and "more than 6 decimal places" in tiny.stderr
    negative = kraken(tmp_path, "topup", "cus_a", "-5")
    assert negative.returncode == 2 and "top-up amount must be positive" in negative.stderr


def test_the_audit_entry_of_a_topup_holds_no_free_text_reference(tmp_path):
    """A --ref is the operator's free text (here naming a person): the audit log keeps the
    amount, as the admin API's entry does, never the value, which erasure could not redact."""
    ref = "invoice for ada.lovelace@example.com"
    assert kraken(tmp_path, "topup", "cus_a", "5", "--ref", ref).returncode == 0
    listed = subprocess.run([sys.executable, "-m", "kraken", "audit", "list", "--json",
                             "--config", str(tmp_path / "kraken.toml")],
                            capture_output=True, text=True, timeout=60, check=True)
    (entry,) = json.loads(listed.stdout)
    assert entry["action"] == "wallet.top_up" and entry["detail"] == {"amount_micros": 5_000_000}
    assert "ada.lovelace" not in listed.stdout


def test_an_out_of_range_transactions_limit_is_refused_naming_it(tmp_path):
    """--limit is 1-1000 (as the admin API's ?limit=): -5, 0 or 5000 were quietly taken as
    1 or 1000 rows, not what the operator asked for."""
    assert kraken(tmp_path, "topup", "cus_a", "5").returncode == 0
    for bad in ("-5", "0", "1001"):
        refused = kraken(tmp_path, "transactions", "cus_a", "--limit", bad)
        assert refused.returncode == 2 and refused.stdout == "", (bad, refused)
        assert refused.stderr == "kraken: --limit: must be between 1 and 1000\n", refused.stderr
    for good in ("1", "1000"):
        shown = kraken(tmp_path, "transactions", "cus_a", "--limit", good)
        assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 1

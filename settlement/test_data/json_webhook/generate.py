#!/usr/bin/env python3
"""Writes the json_webhook golden inputs with real HMAC-SHA256 signatures.

Run from this directory: `python3 generate.py`. The secret matches config.toml. Each
capture-log line is {"headers": {...}, "body": "<raw body>"}; request cases get a
<case>.in body and a <case>.headers file ("Name: value" per line).
"""
import hashlib
import hmac
import json

SECRET = b"test-secret"


def sign(body):
    return "sha256=" + hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()


def line(body, headers=None):
    if headers is None:
        headers = {"X-Signature": sign(body)}
    return json.dumps({"headers": headers, "body": body}, separators=(",", ":"))


def tx(tx_id, kind, amount, currency="USD", ts="2026-11-24T10:00:00Z", **extra):
    record = {"tx_id": tx_id, "type": kind, "player_id": "player-1", "game_id": "lightning-roulette",
              "round_id": "R1", "money": {"amount": amount, "currency": currency}, "timestamp": ts}
    record.update(extra)
    return record


def body(value):
    # json.dumps cannot write a number in exponent form; a placeholder stands in for 1e1.
    return json.dumps(value, separators=(",", ":")).replace('"__1e1__"', "1e1")


def write(name, lines):
    with open(name + ".in", "w") as f:
        f.write("\n".join(lines) + "\n")


def write_request(name, raw_body, headers):
    with open(name + ".in", "w") as f:
        f.write(raw_body)
    with open(name + ".headers", "w") as f:
        f.write("".join(f"{k}: {v}\n" for k, v in headers))


single = body(tx("T1", "DEBIT", "10.50", session_id="S1"))
write("single", [
    line(single),
    # The header name is matched case-insensitively; the body keeps its own formatting.
    line('{ "tx_id": "T2", "type": "CREDIT", "player_id": "player-1", "money": {"amount": "25", "currency": "EUR"},'
         ' "timestamp": "2026-11-24T11:30:00.250+01:00" }', headers={"x-signature": sign(
             '{ "tx_id": "T2", "type": "CREDIT", "player_id": "player-1", "money": {"amount": "25", "currency": "EUR"},'
             ' "timestamp": "2026-11-24T11:30:00.250+01:00" }')}),
])

write("batch", [
    line(body({"batch_id": "B1", "transactions": [
        tx("T10", "DEBIT", "5.00"),
        tx("T11", "CREDIT", "12.75"),
        tx("T12", "CANCEL", "5.00", ref_tx_id="T10"),
        tx("T13", "JACKPOT", "1000.00", round_id=42),
        tx("T14", "BONUS", "2.5"),
    ]})),
    "",
    line(body([tx("T20", "DEBIT", "1.00"), tx("T21", "CREDIT", 3.25)])),
    line(body({"transactions": []})),
])

good = body(tx("T30", "DEBIT", "7.00"))
tampered = good.replace('"7.00"', '"700.00"')
write("signatures", [
    line(good),
    line(good, headers={"X-Signature": sign(good).replace("sha256=", "sha256=00")}),
    line(good, headers={"Content-Type": "application/json"}),
    line(tampered, headers={"X-Signature": sign(good)}),
    line(good, headers={"X-Signature": "sha256=not-hex"}),
    line(good, headers={"X-Signature": sign(good)[len("sha256="):]}),
    line(good, headers={"X-Signature": sign(good), "x-signature": sign(good)}),
    line(good, headers={"X-Signature": "sha256=" + hmac.new(b"other-secret", good.encode(), hashlib.sha256).hexdigest()}),
])

write("malformed", [
    "this is not json",
    json.dumps({"headers": {}}),
    json.dumps({"headers": {"X-Signature": sign(good)}, "body": good, "extra": 1}),
    line("{not json"),
    line('"just a string"'),
    line(body({"transactions": {"tx_id": "T40"}})),
    line(body({"transactions": [tx("T41", "DEBIT", "1.00"), "oops", [1]]})),
    line('{"tx_id":"T42","tx_id":"T43","type":"DEBIT"}'),
    line('{"tx_id":"T44","type":"DEBIT","player_id":"p","money":{"amount":"1","currency":"USD"},"timestamp":"2026-11-24T10:00:00Z"} trailing'),
])

write("record_errors", [
    line(body({"transactions": [
        {"type": "DEBIT", "player_id": "p", "money": {"amount": "1.00", "currency": "USD"}, "timestamp": "2026-11-24T10:00:00Z"},
        tx("E2", "DEBIT", None),
        tx("E3", "DEBIT", "10.505"),
        tx("E4", "DEBIT", "1e3"),
        tx("E5", "DEBIT", "1,000.00"),
        tx("E6", "REFUND", "1.00"),
        tx("E7", "DEBIT", "1.00", currency="XYZ"),
        tx("E8", "DEBIT", "1.00", ts="24/11/2026 10:00"),
        tx(True, "DEBIT", "1.00"),
        tx("E10", "", "1.00"),
        {"tx_id": "E11", "type": "DEBIT", "player_id": "p", "money": "1.00 USD", "timestamp": "2026-11-24T10:00:00Z"},
        tx("E12", "DEBIT", "1.00", player_id="x" * 129),
        tx("E13", "DEBIT", "__1e1__"),
        tx("E14", "DEBIT", "1.00", ts=1764000000000),
        tx("E15", "DEBIT", "99999999999999999999.00"),
        tx("E16", "DEBIT", "1.00", currency="usd"),
        tx("E17", "DEBIT", "1.00", round_id=1.5),
        tx("E18", "DEBIT", "1.00", player_id="tab\there"),
        tx("E19", "DEBIT", True),
        tx("E20", "DEBIT", "-2.00"),
    ]})),
    # A single (non-batch) delivery: the message has no item number.
    line(body(tx("E21", "DEBIT", "0.001"))),
])

write("exponents", [
    line(body({"transactions": [
        tx("K1", "DEBIT", "15000", currency="KRW"),
        tx("K2", "DEBIT", "15000.00", currency="KRW"),
        tx("K3", "DEBIT", "15000.5", currency="KRW"),
        tx("B1", "DEBIT", "1.234", currency="BHD"),
        tx("B2", "CREDIT", "0.5", currency="BHD"),
        tx("B3", "DEBIT", "1.2345", currency="BHD"),
    ]})),
])

write("epoch_millis", [
    line(body({"tx_id": "M1", "type": "DEBIT", "player_id": "p", "amount": "3.00", "timestamp": 1795514400123})),
    line(body({"tx_id": "M2", "type": "DEBIT", "player_id": "p", "amount": "3.00", "timestamp": "1795514400000"})),
    line(body({"tx_id": "M3", "type": "DEBIT", "player_id": "p", "amount": "3.00", "timestamp": "2026-11-24T10:00:00Z"})),
    line(body({"tx_id": "M4", "type": "DEBIT", "player_id": "p", "amount": "3.00", "timestamp": 99999999999999999})),
])

request_single = body(tx("Q1", "DEBIT", "4.00"))
write_request("request_single", request_single, [("Content-Type", "application/json"), ("X-SIGNATURE", sign(request_single))])
request_batch = body([tx("Q2", "DEBIT", "4.00"), tx("Q3", "CREDIT", "x")])
write_request("request_batch", request_batch, [("X-Signature", sign(request_batch))])
write_request("request_tampered", request_single.replace("4.00", "400.00"), [("X-Signature", sign(request_single))])
write_request("request_missing_signature", request_single, [("Content-Type", "application/json")])
write_request("request_not_json", "{oops", [("X-Signature", sign("{oops"))])

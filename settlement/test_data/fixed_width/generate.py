#!/usr/bin/env python3
"""Writes the fixed_width golden inputs (layout in config.toml). `python3 generate.py`.
Counts and control totals are computed here unless a case overrides them on purpose."""


def header(batch="BATCH0001", date="20261124", currency="GBP"):
    return f"H{batch:<10}{date:<8}{currency:<3}"


def detail(tx_id, account, kind, amount, occurred, original="", amount_text=None):
    if amount_text is None:
        amount_text = f"{'-' if amount < 0 else '+'}{abs(amount):012d}"
    return f"D{tx_id:<16}{account:<12}{kind:<3}{amount_text:>13}{occurred:<14}{original:<16}"


def trailer(count, total):
    return f"T{count:08d}{'-' if total < 0 else '+'}{abs(total):014d}"


def batch(details, count=None, total=None, amounts=None, head=None, tail=None, sep="\n"):
    lines = [head if head is not None else header()]
    lines += [d for d, _ in details]
    amounts = [a for _, a in details if a is not None]
    count = len([d for d in details if d[0].startswith("D")]) if count is None else count
    total = sum(amounts) if total is None else total
    lines.append(tail if tail is not None else trailer(count, total))
    return sep.join(lines) + sep


def d(*args, **kwargs):
    return (detail(*args, **kwargs), None if kwargs.get("amount_text") else args[3])


def write(name, text):
    with open(name + ".in", "w", newline="") as f:
        f.write(text)


write("valid", batch([
    d("LB0001", "GB-ACC-1", "DEP", 150000, "20261124083000"),
    d("LB0002", "GB-ACC-1", "WDR", 2500, "20261124091500"),
    d("LB0003", "GB-ACC-2", "FEE", 150, "20261124120000"),
    d("LB0004", "GB-ACC-1", "CHB", 150000, "20261124170000", original="LB0001"),
    d("LB0005", "GB-ACC-3", "ADJ", -1234, "20261124235959"),
]))

write("crlf_blank_lines", batch([
    d("LC0001", "GB-ACC-1", "DEP", 100, "20261124083000"),
    ("", None),
    d("LC0002", "GB-ACC-1", "DEP", 200, "20261124083001"),
], count=2, sep="\r\n"))

write("detail_errors", batch([
    d("LE0001", "GB-ACC-1", "XXX", 100, "20261124083000"),
    d("", "GB-ACC-1", "DEP", 100, "20261124083000"),
    d("LE0003", "GB-ACC-1", "DEP", 100, "20261124253000"),
    d("LE0004", "GB-ACC-1", "DEP", 100, "20260329013000"),
    d("LE0005", "GB-ACC-1", "DEP", 100, "20261025013000"),
    (detail("LE0006", "GB-ACC-1", "DEP", 100, "20261124083000")[:40], 100),
    ("X unknown record type", None),
    d("LE0008", "", "DEP", 100, "20261124083000"),
    ("Dé" + detail("LE0009", "GB-ACC-1", "DEP", 100, "20261124083000")[2:], 100),
    d("LE0010", "GB-ACC-1", "DEP", 100, "20261124083000", original="LE0001"),
    d("LE0011", "GB-ACC-1", "DEP", 0, "", ),
], count=10, total=800))

# Unreadable amounts: the control total cannot cover them, so the file is rejected ...
write("unreadable_amount", batch([
    d("LU0001", "GB-ACC-1", "DEP", 100, "20261124083000"),
    d("LU0002", "GB-ACC-1", "DEP", None, "20261124083000", amount_text="12.50"),
], count=2, total=1350))
# ... unless the trailer agrees with the readable ones, and the detail is rejected alone.
write("unreadable_amount_zero", batch([
    d("LZ0001", "GB-ACC-1", "DEP", 100, "20261124083000"),
    d("LZ0002", "GB-ACC-1", "DEP", None, "20261124083000", amount_text="+00000000001x"),
], count=2, total=100))

write("count_mismatch", batch([d("LM0001", "GB-ACC-1", "DEP", 100, "20261124083000")], count=2))
write("total_mismatch", batch([d("LT0001", "GB-ACC-1", "DEP", 100, "20261124083000")], total=101))
# A layout with 20-character amounts, where 64-bit overflow is reachable (total_overflow.toml).
write("total_overflow", "\n".join([
    "HGBP",
    "DO0001" + "ACC1" + "DEP" + "+9223372036854775807" + "20261124083000",
    "DO0002" + "ACC1" + "DEP" + "+0000000000000000001" + "20261124083000",
    "T00000002" + "+0000000000000000000",
]) + "\n")
write("no_trailer", header() + "\n" + detail("LN0001", "GB-ACC-1", "DEP", 100, "20261124083000") + "\n")
write("no_header", detail("LH0001", "GB-ACC-1", "DEP", 100, "20261124083000") + "\n" + trailer(1, 100) + "\n")
write("empty", "")
write("after_trailer", batch([d("LA0001", "GB-ACC-1", "DEP", 100, "20261124083000")]) + detail("LA0002", "GB-ACC-1", "DEP", 1, "20261124083000") + "\n")
write("two_headers", batch([("H" + "BATCH0002 20261124GBP", None), d("LD0001", "GB-ACC-1", "DEP", 100, "20261124083000")], count=1))
write("unknown_header_currency", batch([d("LK0001", "GB-ACC-1", "DEP", 100, "20261124083000")], head=header(currency="XYZ")))
write("bad_business_date", batch([d("LB0001", "GB-ACC-1", "DEP", 100, "20261124083000")], head=header(date="20261332")))
write("short_trailer", batch([d("LS0001", "GB-ACC-1", "DEP", 100, "20261124083000")], tail="T00000001"))
write("bad_trailer_count", batch([d("LS0001", "GB-ACC-1", "DEP", 100, "20261124083000")], tail="T0000000x+00000000000100"))

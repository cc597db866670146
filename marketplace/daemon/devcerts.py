"""Development certificates: a private CA and a server certificate it signs.

For trying TLS out on one machine, never for production.  Run

    python -m marketplace.daemon.devcerts [FOLDER] [--host NAME]...

(or C{make dev-certs}) to write into FOLDER (default C{certs}):

- C{ca/ca.pem}: the CA certificate.  C{ca/} is the folder clients trust
  (C{tls:host=localhost:port=8443:trustRoots=certs/ca}); C{ca.pem} is the
  file for the terminal programs' C{--ca-cert}.
- C{ca.key}: the CA's private key, should more certificates be wanted.
- C{server.pem}, C{server.key}: the server's certificate (for localhost,
  127.0.0.1 and ::1, and each C{--host}) and private key
  (C{ssl:8443:privateKey=certs/server.key:certKey=certs/server.pem}).
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, Optional

from marketplace.daemon import certificates
from marketplace.frame import secretfiles

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 825
ORGANIZATION = "Marketplace development"


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    if secret:
        # Private from its first byte, whatever was there before (--force).
        secretfiles.replace(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(path, flags, 0o644), "wb") as f:
        f.write(data)


def make_dev_certs(
    folder, hosts: Iterable[str] = DEFAULT_HOSTS, common_name: str = "localhost"
) -> Dict[str, Path]:
    """Write a new CA and a server certificate for C{hosts} into C{folder};
    the paths written, by name (ca_dir, ca_cert, ca_key, cert, key)."""
    folder = Path(folder)
    ca_cert, ca_key = certificates.new_authority(
        "Marketplace development CA", ORGANIZATION, VALID_DAYS
    )
    cert, key = certificates.issue(
        ca_cert, ca_key, common_name, ORGANIZATION, list(hosts), certificates.SERVER,
        VALID_DAYS,
    )
    paths = {
        "ca_dir": folder / "ca",
        "ca_cert": folder / "ca" / "ca.pem",
        "ca_key": folder / "ca.key",
        "cert": folder / "server.pem",
        "key": folder / "server.key",
    }
    _write(paths["ca_cert"], ca_cert.encode())
    _write(paths["ca_key"], ca_key.encode(), secret=True)
    _write(paths["cert"], cert.encode())
    _write(paths["key"], key.encode(), secret=True)
    return paths


def main(argv: Optional[list] = None) -> int:
    """The command line: write the certificates unless they exist."""
    parser = argparse.ArgumentParser(
        prog="python -m marketplace.daemon.devcerts",
        description="Make a development CA and a server certificate it signs.",
    )
    parser.add_argument("folder", nargs="?", default="certs")
    parser.add_argument(
        "--host", action="append", default=[],
        help="another host name or address the server certificate is for",
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if (folder / "server.pem").exists() and not args.force:
        print(f"{folder}/server.pem exists; --force makes new certificates")
        return 0
    paths = make_dev_certs(folder, [*DEFAULT_HOSTS, *args.host])
    print(
        f"wrote {paths['ca_cert']} (the CA clients trust), {paths['cert']} and"
        f" {paths['key']}.\n"
        f"serve:   --listen ssl:8443:privateKey={paths['key']}:certKey={paths['cert']}\n"
        f"connect: tls:host=localhost:port=8443:trustRoots={paths['ca_dir']}"
        f"  (or --ca-cert {paths['ca_cert']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

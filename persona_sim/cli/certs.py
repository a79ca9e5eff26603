"""`persona-sim certs DIR`: a throwaway CA, a cloud certificate, a device-node certificate and a bearer token,
for trying TLS, mutual TLS and token auth. Runs the `openssl` command; for production, use your own PKI."""
from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from pathlib import Path

from ..errors import NodeError

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NodeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _san(hosts: list[str]) -> str:
    entries = []
    for h in hosts:
        try:
            ipaddress.ip_address(h)
            entries.append(f"IP:{h}")
        except ValueError:
            entries.append(f"DNS:{h}")
    return ",".join(entries)


def _signed(name: str, subject: str, extensions: str, out: Path, days: int) -> None:
    (out / f"{name}.ext").write_text(extensions)
    _openssl(["req", *KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject], out)
    _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
              "-out", f"{name}.pem", "-days", str(days), "-extfile", f"{name}.ext"], out)
    for tmp in (f"{name}.csr", f"{name}.ext"):
        (out / tmp).unlink()


def make_certs(out: Path, hosts: list[str], days: int = 30) -> dict[str, Path]:
    """Write ca.pem/.key, cloud.pem/.key (valid for ``hosts``), device.pem/.key and token into ``out``."""
    if shutil.which("openssl") is None:
        raise NodeError("`persona-sim certs` needs the openssl command (e.g. `apt-get install openssl`)")
    out.mkdir(parents=True, exist_ok=True)
    _openssl(["req", "-x509", *KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
              "-subj", "/CN=persona-sim throwaway CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], out)
    _signed("cloud", "/CN=persona-sim cloud", f"subjectAltName={_san(hosts)}\nextendedKeyUsage=serverAuth\n", out, days)
    _signed("device", "/CN=persona-sim device node", "extendedKeyUsage=clientAuth\n", out, days)
    (out / "ca.srl").unlink(missing_ok=True)
    token = out / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    for key in ("ca.key", "cloud.key", "device.key", "token"):
        (out / key).chmod(0o600)
    return {name: out / name for name in ("ca.pem", "cloud.pem", "cloud.key", "device.pem", "device.key", "token")}

"""A real OpenLDAP server (Debian's slapd) run by the test itself: own process, temp config, free port.

Never a system service: slapd runs in the foreground (``-d 0``) from a ``slapd.conf`` in a
temp folder with an mdb database there, and is stopped by its process id.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port, missing, port_open, wait_for

SUFFIX = "dc=enclave,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "slapd-root-pass"


@dataclass
class Slapd:
    url: str
    people: str = f"ou=people,{SUFFIX}"
    groups: str = f"ou=groups,{SUFFIX}"


def _entries(users: dict[str, str], groups: dict[str, list[str]]) -> str:
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Enclave\ndc: enclave",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for uid, password in users.items():
        blocks.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid}\nsn: {uid}\nuserPassword: {password}"
        )
    for name, members in groups.items():
        member_lines = "\n".join(f"member: uid={m},ou=people,{SUFFIX}" for m in members)
        blocks.append(
            f"dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {name}\n{member_lines}"
        )
    return "\n\n".join(blocks) + "\n"


@contextmanager
def running_slapd(
    tmp_path: Path, users: dict[str, str], groups: dict[str, list[str]]
) -> Iterator[Slapd]:
    slapd = shutil.which("slapd") or "/usr/sbin/slapd"
    if not Path(slapd).exists() or not shutil.which("ldapadd"):
        missing("slapd/ldap-utils are not installed (make tools installs them)")
    port = free_port()
    data = tmp_path / "ldap-data"
    data.mkdir()
    config = tmp_path / "slapd.conf"
    config.write_text(
        "\n".join(
            [
                *(
                    f"include /etc/ldap/schema/{s}.schema"
                    for s in ("core", "cosine", "inetorgperson", "nis")
                ),
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {tmp_path / 'slapd.pid'}",
                "database mdb",
                "maxsize 10485760",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ROOT_DN}"',
                f"rootpw {ROOT_PASSWORD}",
                f"directory {data}",
                "access to attrs=userPassword by anonymous auth by self write by * none",
                "access to * by * read",
                "",
            ]
        )
    )
    process = subprocess.Popen(
        [slapd, "-f", str(config), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: process.poll() is not None or port_open("127.0.0.1", port),
            timeout=30,
            what="slapd to listen",
        )
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited: {process.stderr.read().decode()[-2000:]}")
        url = f"ldap://127.0.0.1:{port}"
        subprocess.run(
            ["ldapadd", "-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=_entries(users, groups).encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        yield Slapd(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

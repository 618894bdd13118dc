"""Store URLs that name several PostgreSQL hosts (a primary and its standbys).

libpq (and so psycopg 3) takes a list of hosts and connects to the first that answers and
fits ``target_session_attrs``; with ``read-write`` that is the primary, so after a standby
is promoted every new connection finds it. Rota accepts every form libpq does:

* ``postgresql://user@h1:5432,h2:5433/db?target_session_attrs=read-write&schema=rota``
* ``postgresql:///db?host=h1,h2&port=5432,5433&target_session_attrs=read-write``
* libpq's keyword form, ``host=h1,h2 port=5432,5433 dbname=db
  target_session_attrs=read-write schema=rota`` (``schema`` and ``auto_migrate`` are rota's;
  the rest is libpq's), turned into the second form by :func:`conninfo_to_url`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import SplitResult, quote, urlencode

from psycopg.conninfo import conninfo_to_dict

from rota.core.errors import InvalidOption

# key = value, the value bare or single-quoted with backslash escapes (libpq's rules)
_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
ROTA_PARAMS = ("schema", "auto_migrate")


def _unquote(value: str) -> str:
    if value.startswith("'"):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def conninfo_to_url(conninfo: str) -> str:
    """A ``postgresql:///db?host=...`` URL for libpq's keyword form ``conninfo``."""
    pos, ours, rest = 0, {}, []
    while pos < len(conninfo.rstrip()):
        m = _PAIR.match(conninfo, pos)
        if m is None:
            raise InvalidOption(f"cannot read the connection string at: {conninfo[pos:]!r}")
        key, value = m.group(1), _unquote(m.group(2))
        if key in ROTA_PARAMS:
            ours[key] = value
        else:
            rest.append(m.group(0).strip())
        pos = m.end()
    try:
        params = conninfo_to_dict(" ".join(rest))
    except Exception as exc:  # psycopg.ProgrammingError: libpq refused it
        raise InvalidOption(f"bad PostgreSQL connection string: {exc}") from None
    dbname = str(params.pop("dbname", "") or "")
    query = {k: str(v) for k, v in params.items() if v is not None} | ours
    return f"postgresql:///{quote(dbname, safe='')}?{urlencode(query)}"


def with_query(parts: SplitResult, query: Sequence[tuple[str, str]]) -> str:
    """``parts`` put back together with ``query``, keeping ``//`` when the host list is
    empty (``urlunsplit`` drops it: ``postgresql:/db`` is not a URL libpq reads)."""
    text = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if query:
        text += "?" + urlencode(query)
    if parts.fragment:
        text += "#" + parts.fragment
    return text

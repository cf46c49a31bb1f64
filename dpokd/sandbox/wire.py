"""The wire format between the checker and the program: plain data by exact type, nothing else.

A value is a tag, then its body: ``N T F`` for None and the bools, ``i<hex>;``, ``f<repr>;``,
``c<repr>;<repr>;``, ``b<hex>;``, ``s<n>:<n characters>``, and ``l t S z d <n>:`` followed by n
items (n key-value pairs for ``d``). The program's side encodes instances of subclasses of the
plain types as the plain type (a ``Counter`` as a dict, a namedtuple as a tuple, an ``IntEnum``
as an int), because the tests compare them equal; the checker's side decodes plain data only,
so an object whose ``__eq__`` always says yes never reaches a comparison.

Imported by the harness before it isolates itself, so it uses the standard library alone.
"""

import os

MAX_DEPTH = 100


class NotPlain(Exception):
    """A value the wire format cannot carry."""


def encode(v, out, depth=0):
    if depth > MAX_DEPTH:
        raise NotPlain("data nested more than %d levels deep" % MAX_DEPTH)
    if v is None:
        out.append("N")
    elif isinstance(v, bool):
        out.append("T" if v else "F")
    elif isinstance(v, int):
        out.append("i%x;" % int.__index__(v))  # hex: no limit on digits, unlike decimal
    elif isinstance(v, float):
        out.append("f%s;" % float.__repr__(v))
    elif isinstance(v, complex):
        out.append("c%s;%s;" % (float.__repr__(complex.__getattribute__(v, "real")),
                                float.__repr__(complex.__getattribute__(v, "imag"))))
    elif isinstance(v, str):
        text = str.__str__(v)
        out.append("s%d:" % len(text))
        out.append(text)
    elif isinstance(v, bytes):
        out.append("b%s;" % bytes.hex(v))
    elif isinstance(v, (list, tuple, set, frozenset)):
        items = list.__iter__(v) if isinstance(v, list) else tuple.__iter__(v) if isinstance(v, tuple) else iter(v)
        items = list(items)
        tag = "l" if isinstance(v, list) else "t" if isinstance(v, tuple) else "z" if isinstance(v, frozenset) else "S"
        out.append("%s%d:" % (tag, len(items)))
        for x in items:
            encode(x, out, depth + 1)
    elif isinstance(v, dict):
        pairs = list(dict.items(v))
        out.append("d%d:" % len(pairs))
        for k, x in pairs:
            encode(k, out, depth + 1)
            encode(x, out, depth + 1)
    else:
        raise NotPlain("a %s" % str(getattr(type(v), "__name__", "?"))[:60])


def parse(s, i=0, depth=0):
    """One value of the wire format from ``s[i:]``, and where it ends; anything malformed raises."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    tag = s[i]
    i += 1
    if tag in "NTF":
        return {"N": None, "T": True, "F": False}[tag], i
    if tag in "ifbc":
        end = s.index(";", i)
        body = s[i:end]
        if tag == "i":
            return int(body, 16), end + 1
        if tag == "f":
            return float(body), end + 1
        if tag == "b":
            return bytes.fromhex(body), end + 1
        end2 = s.index(";", end + 1)
        return complex(float(body), float(s[end + 1:end2])), end2 + 1
    colon = s.index(":", i)
    count = s[i:colon]
    if not (count.isascii() and count.isdigit()):
        raise ValueError("malformed")
    n, i = int(count), colon + 1
    if tag == "s":
        if i + n > len(s):
            raise ValueError("malformed")
        return s[i:i + n], i + n
    if tag not in "ltSzd":
        raise ValueError("malformed")
    items = []
    for _ in range(2 * n if tag == "d" else n):
        item, i = parse(s, i, depth + 1)
        items.append(item)
    if tag == "l":
        return items, i
    if tag == "t":
        return tuple(items), i
    if tag == "S":
        return set(items), i
    if tag == "z":
        return frozenset(items), i
    return dict(zip(items[::2], items[1::2])), i


def message(*fields):
    out = []
    encode(fields, out)
    return out


def send(fd, parts):
    data = "".join(parts).encode("utf-8", "surrogatepass")
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]


def read_exactly(fd, size):
    """``size`` bytes from ``fd``, or fewer when it closes first."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    """A length-prefixed frame, as dpokd writes the program and the tests."""
    return read_exactly(fd, int.from_bytes(read_exactly(fd, 8).rjust(8, b"\0"), "big"))


def recv(fd, limit):
    """A message, or None when the other side has gone; raises ValueError when it is malformed."""
    head = read_exactly(fd, 8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        raise ValueError("a message of more than %d bytes" % limit)
    body = read_exactly(fd, size)
    if len(body) < size:
        return None
    try:
        text = body.decode("utf-8", "surrogatepass")
        value, end = parse(text)
    except (IndexError, ValueError, TypeError, OverflowError, RecursionError, UnicodeDecodeError):
        raise ValueError("malformed") from None
    if end != len(text) or type(value) is not tuple or not value:
        raise ValueError("malformed")
    return value

#!/usr/bin/env python3
"""Plain Python peer of `safetally pseudonymise` for the screening form.

The benchmark (benches/pseudonymise.rs) runs this script on the same CSV as
the Rust tool to compare rows per second. It does the same work as the Rust
code, in one single-threaded pass, with the standard library only:

  src/pseudonymise/normalise.rs   normalise_text, name_tokens, normalise_passport,
                                  parse_date, parse_birth_date, age_band
  src/pseudonymise/matchkeys.rs   length-prefixed HMAC-SHA256 keys
                                  (passport/1, name_dob/1, record/1)
  src/pseudonymise/encode.rs      drop format 2's encodings: name and passport
                                  Bloom filters, name-filter bit flips,
                                  date-of-birth keys, name key, blocking keys
  src/pseudonymise/mod.rs         code_row (validation, derivation),
                                  normalise_reference, duplicate references
  src/pseudonymise/country.rs     nationality lookup (schemas/countries.tsv)
  src/schema.rs                   code lists (schemas/codes.toml), squash
  src/raw.rs                      CSV reading (BOM, separator, blank rows,
                                  invalid UTF-8 and extra cells as row defects)

Usage:
  python3 benches/peer_pseudonymise.py INPUT.csv KEYFILE OUT.csv --org ORG --period YYYY-MM
  python3 benches/peer_pseudonymise.py --self-test

OUT.csv holds one line per accepted row: record_key, key_passport,
key_name_dob (hex, blank when the rule has no key), event_month, age_band,
then the kept coded columns of the form (yes/no columns as true/false,
blank for unknown), then enc_name, enc_dob, enc_passport, name_key and
block_keys (hex). The Rust tool writes the same values to Parquet, except
the name filter's flipped bits, which come from each side's own random
generator (the suite compares the rest byte for byte).

Prints one JSON line: {"rows": N, "rejected": R, "seconds": S,
"rows_per_second": X}. N is the number of accepted rows (the rows the Rust
tool would put in the drop), R the number of rejected rows, S the wall time
of reading, processing and writing (time.perf_counter; loading the key and
the reference tables is setup and not counted), X = (N + R) / S, the input
data rows handled per second (blank rows are not counted, as in Rust).

Known differences from the Rust code (none matters for the benchmark data):
  * Unicode versions: Python 3.11's unicodedata is Unicode 14; the Rust
    build uses newer tables (unicode-normalization 0.1.26, caseless with
    CaseFolding 16.0, the standard library's char properties). Characters
    assigned after Unicode 14 may normalise differently.
  * "Today" (which bounds dates) is the UTC date, as in the Rust commands;
    --today overrides it.
  * Python's datetime.date has no year 0; chrono does. A date in year 0000
    is refused here as "no such day", in Rust as out of period / before
    1900: the row is rejected either way.
"""

import argparse
import csv
import datetime
import functools
import hashlib
import math
import random
import hmac
import io
import json
import os
import re
import sys
import time
import tomllib
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = os.path.join(HERE, "..", "schemas")
FORM = "screening"

# --------------------------------------------------------------------------
# White space as Rust's str::trim and str::split_whitespace see it (the
# Unicode White_Space property). Python's str.strip()/split() also treat
# U+001C..U+001F as white space, Rust does not, so they are not used bare.
RUST_WS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_PY_ONLY_WS = "\x1c\x1d\x1e\x1f"
_RUST_WS_RUN = re.compile("[" + re.escape(RUST_WS) + "]+")


def rtrim(s):
    """Rust's str::trim."""
    return s.strip(RUST_WS)


def split_whitespace(s):
    """Rust's str::split_whitespace."""
    if any(c in s for c in _PY_ONLY_WS):
        return [p for p in _RUST_WS_RUN.split(s) if p]
    return s.split()


# --------------------------------------------------------------------------
# normalise.rs

NORMALISER_VERSION = "1"

APOSTROPHES = "'`\u2018\u2019\u02bc\u02b9"

# ASCII fast path table: apostrophes dropped, letters lower-cased, digits
# kept, everything else a space.
_ASCII_TABLE = {}
for _o in range(128):
    _c = chr(_o)
    if _c in "'`":
        _ASCII_TABLE[_o] = None
    elif "A" <= _c <= "Z":
        _ASCII_TABLE[_o] = _c.lower()
    elif "a" <= _c <= "z" or "0" <= _c <= "9":
        pass  # unchanged
    else:
        _ASCII_TABLE[_o] = " "

# Symbols (So) that have the Other_Alphabetic property, hence are
# char::is_alphabetic() in Rust, but are not str.isalnum() in Python. In
# Unicode 14 these four ranges are the only characters (outside marks,
# which are removed first) where the two definitions differ. The circled and
# squared letters decompose to plain letters under NFKD anyway; the
# negative circled/squared ones (U+1F150.., U+1F170..) do not.
_OTHER_ALPHABETIC_SYMBOLS = (
    (0x24B6, 0x24E9),
    (0x1F130, 0x1F149),
    (0x1F150, 0x1F169),
    (0x1F170, 0x1F189),
)


def is_alphanumeric(c):
    """Rust's char::is_alphanumeric: Alphabetic, or General_Category Nd/Nl/No.

    str.isalnum() is Lu/Ll/Lt/Lm/Lo or a Numeric_Type; it differs only on
    the Other_Alphabetic symbols above (checked against Perl's
    \\p{Alphabetic} over all of Unicode 14)."""
    if c.isalnum():
        return True
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _OTHER_ALPHABETIC_SYMBOLS)


class _TextClasses(dict):
    """str.translate table for normalise_text, filled in on first sight of a
    character: marks (General_Category M*) and apostrophes deleted,
    letters and digits kept, anything else a space."""

    def __missing__(self, o):
        c = chr(o)
        if unicodedata.category(c).startswith("M") or c in APOSTROPHES:
            v = None
        elif is_alphanumeric(c):
            v = o
        else:
            v = " "
        self[o] = v
        return v


# The full path keeps ASCII capitals as they are, as Rust does (after case
# folding and NFKD none is left; Python's tables agree for Unicode 14).
_TEXT_TABLE = _TextClasses({o: v for o, v in _ASCII_TABLE.items() if not "A" <= chr(o) <= "Z"})


def normalise_text(raw):
    """NFKD, full case folding, marks and apostrophes removed, any other
    character that is not a letter or digit to a space, spaces collapsed and
    trimmed, then NFC. ASCII input takes the fast path, as in Rust."""
    if raw.isascii():
        return " ".join(raw.translate(_ASCII_TABLE).split())
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", raw).casefold())
    # After translate only letters, digits and U+0020 are left, so split()
    # splits on U+0020 alone.
    out = " ".join(folded.translate(_TEXT_TABLE).split())
    return unicodedata.normalize("NFC", out)


PARTICLES = frozenset([
    "al", "d", "da", "das", "de", "del", "dela", "delas", "della", "delos", "den", "der", "di",
    "do", "dos", "du", "el", "la", "las", "le", "los", "mac", "mc", "o", "san", "santa", "santo",
    "st", "ten", "ter", "van", "von",
])
PARTICLE_ABBREVIATIONS = {"sta": "santa", "sto": "santo"}
CONNECTORS = frozenset(["bin", "binte", "binti", "bte"])


def _field_tokens(normalised, out):
    words = [w for w in normalised.split(" ") if w and w not in CONNECTORS]
    prefix = ""
    last = len(words) - 1
    for i, w in enumerate(words):
        particle = PARTICLE_ABBREVIATIONS.get(w, w)
        if i != last and particle in PARTICLES:
            prefix += particle
            continue
        out.append(prefix + w)
        prefix = ""


def name_tokens(family, given):
    """Both fields normalised, connectors dropped, particles joined to the
    next token of their field, all tokens sorted (code point order is UTF-8
    byte order, as Rust's sort of Strings)."""
    tokens = []
    _field_tokens(normalise_text(family), tokens)
    _field_tokens(normalise_text(given), tokens)
    tokens.sort()
    return tokens


class PassportError(Exception):
    pass


_PASSPORT_SKIP = {ord(c): None for c in " -\u00a0\t" + "".join(chr(c) for c in range(0x2010, 0x2016))}


def normalise_passport(raw):
    """NFKC, spaces and dashes removed, ASCII letters upper-cased; any other
    character refused; at most 20 characters. None for blank."""
    s = raw if raw.isascii() else unicodedata.normalize("NFKC", raw)
    out = s.translate(_PASSPORT_SKIP)
    if not out:
        return None
    # On an ASCII string isalnum() is exactly [A-Za-z0-9].
    if not (out.isascii() and out.isalnum()):
        raise PassportError("bad character")
    if len(out) > 20:
        raise PassportError("too long")
    return out.upper()


class DateError(Exception):
    pass


def _num(p, max_len):
    if not p or len(p) > max_len or not (p.isascii() and p.isdigit()):
        raise DateError("format")
    return int(p)


def parse_date(raw):
    """YYYY-MM-DD (a time after 'T' or ' ' ignored), DD/MM/YYYY or D/M/YYYY."""
    s = rtrim(raw)
    # split_once(['T', ' ']): cut at the first 'T' or ' '.
    cut = len(s)
    i = s.find("T")
    if i >= 0:
        cut = i
    i = s.find(" ", 0, cut)
    if i >= 0:
        cut = i
    s = rtrim(s[:cut])
    if "-" in s:
        y, rest = s.split("-", 1)
        if "-" not in rest:
            raise DateError("format")
        m, d = rest.split("-", 1)
        if len(y) != 4:  # Rust counts bytes; non-ASCII fails the digit test anyway
            raise DateError("format")
    elif "/" in s:
        d, rest = s.split("/", 1)
        if "/" not in rest:
            raise DateError("format")
        m, y = rest.split("/", 1)
        if len(y) != 4:
            raise DateError("format")
    else:
        raise DateError("format")
    y, m, d = _num(y, 4), _num(m, 2), _num(d, 2)
    try:
        return datetime.date(y, m, d)
    except ValueError:
        raise DateError("no such day") from None


def parse_birth_date(raw):
    """(year, date or None): a full date, or a year YYYY alone."""
    s = rtrim(raw)
    if len(s) == 4 and s.isascii() and s.isdigit():
        return (int(s), None)
    d = parse_date(s)
    return (d.year, d)


def birth_is_after(birth, day):
    year, full = birth
    if full is not None:
        return full > day
    return year > day.year


def age_at(birth, at):
    year, full = birth
    if full is None:
        return at.year - year
    age = at.year - full.year
    if (at.month, at.day) < (full.month, full.day):
        age -= 1
    return age


def age_band(age):
    if age <= 17:
        return "0-17"
    if age <= 25:
        return "18-25"
    if age <= 35:
        return "26-35"
    if age <= 45:
        return "36-45"
    return "46+"


# --------------------------------------------------------------------------
# matchkeys.rs


def enc(*fields):
    """u32 big-endian length || bytes, for each field."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


class Keyer:
    """HMAC-SHA256 under the task-force key. The keyed state, and for each
    rule the state after enc("safetally") enc(rule) enc(version), are built
    once; each key then copies a state and hashes the fields."""

    def __init__(self, key):
        base = hmac.new(key, digestmod=hashlib.sha256)
        self._rules = {}
        for name in ("passport", "name_dob", "record"):
            h = base.copy()
            h.update(enc(b"safetally", name.encode(), b"1"))
            self._rules[name] = h

    def _rule(self, name, fields):
        h = self._rules[name].copy()
        h.update(enc(*fields))
        return h.digest()

    def passport(self, passport, nationality):
        if passport is None or nationality is None:
            return None
        return self._rule("passport", [passport.encode(), nationality.encode()])

    def name_dob(self, tokens, dob):
        if dob is None or not tokens:
            return None
        return self._rule("name_dob", [dob.encode()] + [t.encode() for t in tokens])

    def record(self, form, org, reference):
        return self._rule("record", [form.encode(), org.encode(), reference.encode()])


class Encoder:
    """The similarity encodings and blocking keys of drop format 2
    (src/pseudonymise/encode.rs): a 1024-bit name Bloom filter over the
    padded bigrams of the name tokens (20 bits a bigram by double hashing
    of the bigram's HMAC), 2% of its bits flipped with randomness seeded by
    an HMAC of the record key; eight keyed date-of-birth hashes; a 256-bit
    passport filter (12 bits a bigram); the name key; up to 12 blocking
    keys. Bigram hashes are cached (functools.lru_cache), as the Rust code
    keeps a table of them. The flips use Python's own generator, so the
    flipped bits differ from the Rust tool's; everything else is the same
    value."""

    NAME_BITS, NAME_K, PASSPORT_BITS, PASSPORT_K, FLIP = 1024, 20, 256, 12, 0.02

    def __init__(self, key):
        base = hmac.new(key, digestmod=hashlib.sha256)
        self._keys = {}
        for rule in ("bloom_name", "dob_keys", "bloom_passport", "name_key", "block",
                     "bloom_name_flip"):
            h = base.copy()
            h.update(enc(b"safetally", rule.encode(), b"1"))
            self._keys[rule] = h
        self._name_gram = functools.lru_cache(maxsize=1 << 16)(
            lambda g: self._gram(self._keys["bloom_name"], g))
        self._passport_gram = functools.lru_cache(maxsize=1 << 16)(
            lambda g: self._gram(self._keys["bloom_passport"], g))
        self._log_keep = math.log(1.0 - self.FLIP)

    @staticmethod
    def _gram(state, gram):
        h = state.copy()
        h.update(enc(gram))
        d = h.digest()
        return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big") | 1

    def _keyed(self, rule, fields):
        h = self._keys[rule].copy()
        h.update(enc(*fields))
        return max(int.from_bytes(h.digest()[:8], "big"), 1)

    @staticmethod
    def _bigrams(word):
        prev = "_"
        for c in word + "_":
            yield (prev + c).encode()
            prev = c

    def _filter(self, words, gram_hash, bits, k):
        f = 0
        mask = (1 << 64) - 1
        for w in words:
            for g in self._bigrams(w):
                h1, h2 = gram_hash(g)
                for i in range(k):
                    f |= 1 << (((h1 + i * h2) & mask) % bits)
        return f

    def encode(self, tokens, birth, passport, record_key):
        """Hex of the name filter, date-of-birth keys, passport filter, name
        key and blocking keys (blank where missing)."""
        name = dob = pp = name_key = ""
        blocks = []
        if tokens:
            f = self._filter(tokens, self._name_gram, self.NAME_BITS, self.NAME_K)
            rng = random.Random(self._flip_seed(record_key))
            pos = 0
            while True:
                gap = math.floor(math.log(1.0 - rng.random()) / self._log_keep)
                if gap >= self.NAME_BITS - pos:
                    break
                pos += gap
                f ^= 1 << pos
                pos += 1
                if pos >= self.NAME_BITS:
                    break
            name = f.to_bytes(self.NAME_BITS // 8, "little").hex()
            fields = [t.encode() for t in tokens]
            name_key = "%016x" % self._keyed("name_key", fields)
            blocks.append(self._keyed("block", [b"names"] + fields))
        if birth is not None:
            year, full = birth
            y = b"%04d" % year
            keys = [0] * 8
            if full is not None:
                m, d = full.month, full.day
                md = bytes([m, d])
                keys[0] = self._keyed("dob_keys", [b"date", y, md])
                keys[1] = self._keyed("dob_keys", [b"unordered", y, bytes([min(m, d), max(m, d)])])
                for i in range(4):
                    masked = y[:i] + b"*" + y[i + 1:]
                    keys[2 + i] = self._keyed("dob_keys", [b"year_digit", masked, md])
                keys[6] = self._keyed("dob_keys", [b"year_digits_sorted", bytes(sorted(y)), md])
                blocks.append(self._keyed("block", [b"dob", year.to_bytes(2, "big"), md]))
            keys[7] = self._keyed("dob_keys", [b"year", y])
            dob = b"".join(k.to_bytes(8, "big") for k in keys).hex()
            for t in tokens[:4]:
                tb = t.encode()
                blocks.append(self._keyed("block", [b"token_year", tb, year.to_bytes(2, "big")]))
                if full is not None:
                    m, d = full.month, full.day
                    blocks.append(self._keyed("block", [b"token_day_month", tb,
                                                        bytes([min(m, d), max(m, d)])]))
        if passport:
            f = self._filter([passport], self._passport_gram, self.PASSPORT_BITS,
                             self.PASSPORT_K)
            pp = f.to_bytes(self.PASSPORT_BITS // 8, "little").hex()
        blocks = sorted(set(blocks))[:12]
        return [name, dob, pp, name_key, "".join("%016x" % b for b in blocks)]

    def _flip_seed(self, record_key):
        h = self._keys["bloom_name_flip"].copy()
        h.update(record_key)
        return h.digest()


def read_key(path):
    """64 hex digits (surrounding white space allowed) or the 32 raw bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 32:
        return data
    try:
        text = rtrim(data.decode("utf-8"))
    except UnicodeDecodeError:
        text = ""
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    sys.exit(f"{path} is not a safetally key (expected 64 hex digits)")


# --------------------------------------------------------------------------
# schema.rs: columns and code lists


def squash(raw):
    """Trimmed, without spaces, '_', '-', '.' and tabs, lower-cased.
    (Rust lower-cases char by char; str.lower() differs only for a Greek
    final sigma, which no code or column name has.)"""
    return rtrim(raw).translate(_SQUASH_DEL).lower()


_SQUASH_DEL = {ord(c): None for c in " _-.\t"}


def load_schema(form):
    with open(os.path.join(SCHEMAS, form + ".toml"), "rb") as f:
        return tomllib.load(f)["column"]


def load_code_lists():
    """{list name: {squashed spelling: code}}; the code itself is a spelling."""
    with open(os.path.join(SCHEMAS, "codes.toml"), "rb") as f:
        raw = tomllib.load(f)
    lists = {}
    for name, table in raw.items():
        lookup = {}
        for code, aliases in table.items():
            for s in [code] + list(aliases):
                prior = lookup.setdefault(squash(s), code)
                assert prior == code, f"codes.toml: {s!r} on two codes of {name}"
        lists[name] = lookup
    return lists


# --------------------------------------------------------------------------
# country.rs


def lookup_keys(raw):
    """Normalised, without a leading 'the ', and also without spaces."""
    n = normalise_text(raw)
    if n.startswith("the "):
        n = n[4:]
    squashed = n.replace(" ", "")
    return [n] if squashed == n else [n, squashed]


def load_countries():
    """{lookup key: [alpha3, ...]} from schemas/countries.tsv."""
    with open(os.path.join(SCHEMAS, "countries.tsv"), encoding="utf-8") as f:
        text = f.read()
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    lines = [l for l in lines if not l.startswith("#") and rtrim(l)]
    assert lines[0] == "alpha2\talpha3\tname\taliases\tdemonyms"
    lookup = {}
    for line in lines[1:]:
        f = line.split("\t")
        assert len(f) == 5, line
        alpha2, alpha3, name = f[0], f[1], f[2]
        aliases = [rtrim(s) for s in f[3].split(";") if rtrim(s)]
        demonyms = [rtrim(s) for s in f[4].split(";") if rtrim(s)]
        for w in [alpha2, alpha3, name] + aliases + demonyms:
            for key in lookup_keys(w):
                entry = lookup.setdefault(key, [])
                if alpha3 not in entry:
                    entry.append(alpha3)
    return lookup


class NationalityError(Exception):
    pass


def nationality(raw, countries):
    """Alpha-3 code, None for blank; NationalityError when unknown or
    ambiguous."""
    if not rtrim(raw):
        return None
    found = countries.get(lookup_keys(raw)[-1])
    if found and len(found) == 1:
        return found[0]
    raise NationalityError("ambiguous" if found else "unknown")


# --------------------------------------------------------------------------
# mod.rs: org, period, reference, one row


def parse_org(raw):
    s = rtrim(raw)
    ok = (
        0 < len(s) <= 32
        and s.isascii()
        and s[0].isalnum()
        and all(c.isalnum() or c in "_-" for c in s)
    )
    if not ok:
        sys.exit(f"organisation code '{s}' is not valid")
    return s.upper()


def _rust_int(s, signed):
    """str::parse for i32/u32: an optional sign, then ASCII digits."""
    body = s[1:] if s[:1] == "+" or (signed and s[:1] == "-") else s
    if not body or not (body.isascii() and body.isdigit()):
        raise ValueError(s)
    return int(s)


def parse_period(raw):
    s = rtrim(raw)
    try:
        if "-" not in s:
            raise ValueError(s)
        y, m = s.split("-", 1)
        if len(y.encode()) != 4 or len(m.encode()) != 2:
            raise ValueError(s)
        year, month = _rust_int(y, True), _rust_int(m, False)
        if not (1 <= month <= 12 and 1900 <= year <= 9999):
            raise ValueError(s)
    except ValueError:
        sys.exit(f"period '{s}' is not a month written YYYY-MM, such as 2018-03")
    return (year, month)


def normalise_reference(raw):
    """Trimmed, inner white space collapsed, upper-cased."""
    return " ".join(split_whitespace(raw)).upper()


class Pseudonymiser:
    def __init__(self, key, org, period, today, form=FORM):
        self.form = form
        self.columns = load_schema(form)
        self.code_lists = load_code_lists()
        self.countries = load_countries()
        self.org = org
        self.period = period
        self.today = today
        self.first_day = datetime.date(period[0], period[1], 1)
        self.keyer = Keyer(key)
        self.encoder = Encoder(key)
        self.ref_index = next(i for i, c in enumerate(self.columns) if c["role"] == "reference")
        # Per column: (role, code lookup or None).
        self.plan = [
            (c["role"], self.code_lists[c.get("codes", "yes_no")]
             if c["role"] in ("sex", "code", "yes_no") else None)
            for c in self.columns
        ]
        self.kept = [c["name"] for c in self.columns
                     if c["role"] in ("sex", "nationality", "code", "yes_no")]

    def header_map(self, header):
        """Position of each schema column in the file's header; SystemExit
        when a column is missing, unknown or repeated."""
        wanted = {squash(c["name"]): i for i, c in enumerate(self.columns)}
        pos = [None] * len(self.columns)
        faults = []
        for p, h in enumerate(header):
            if not h:
                continue
            i = wanted.get(squash(h))
            if i is None:
                faults.append(f"column not in the {self.form} form: '{h}'")
            elif pos[i] is not None:
                faults.append(f"column given twice: {self.columns[i]['name']}")
            else:
                pos[i] = p
        for c, p in zip(self.columns, pos):
            if p is None:
                faults.append(f"missing column: {c['name']}")
        if faults:
            sys.exit("the header row does not match the form: " + "; ".join(faults))
        return pos

    def code_row(self, cells):
        """The output row for valid cells (already in schema order), or None
        when the row has a problem. Every column is checked, as in Rust,
        which collects all of a row's problems."""
        ok = True
        reference = ""
        event = None
        family = given = ""
        birth = None
        passport = None
        nat = None
        values = []
        today = self.today
        for (role, codes), raw in zip(self.plan, cells):
            raw = raw.strip(RUST_WS)
            if role == "yes_no" or role == "code" or role == "sex":
                if not raw:
                    code = None
                else:
                    code = codes.get(raw.translate(_SQUASH_DEL).lower())
                    if code is None:
                        ok = False
                if role == "yes_no":
                    values.append("" if code is None else ("true" if code == "yes" else "false"))
                else:
                    values.append(code or "")
            elif role == "reference":
                if not raw or len(raw) > 64:
                    ok = False
                reference = raw
            elif role == "event_date":
                if not raw:
                    continue
                try:
                    d = parse_date(raw)
                except DateError:
                    ok = False
                    continue
                if d > today or (d.year, d.month) != self.period:
                    ok = False
                else:
                    event = d
            elif role == "family_name":
                family = raw
            elif role == "given_name":
                given = raw
            elif role == "date_of_birth":
                if not raw:
                    continue
                try:
                    b = parse_birth_date(raw)
                except DateError:
                    ok = False
                    continue
                if birth_is_after(b, today) or b[0] < 1900:
                    ok = False
                else:
                    birth = b
            elif role == "passport_number":
                try:
                    passport = normalise_passport(raw)
                except PassportError:
                    ok = False
            elif role == "nationality":
                try:
                    nat = nationality(raw, self.countries)
                except NationalityError:
                    nat = None
                    ok = False
                values.append(nat or "")
            else:
                raise AssertionError(role)
        if birth is not None and event is not None and birth_is_after(birth, event):
            ok = False
        if not ok:
            return None

        at = event if event is not None else self.first_day
        tokens = name_tokens(family, given)
        dob_full = birth[1].isoformat() if birth is not None and birth[1] is not None else None
        k = self.keyer
        record_key = k.record(self.form, self.org, normalise_reference(reference))
        key_passport = k.passport(passport, nat)
        key_name_dob = k.name_dob(tokens, dob_full)
        encodings = self.encoder.encode(tokens, birth, passport, record_key)
        y, m = (event.year, event.month) if event is not None else self.period
        return [
            record_key.hex(),
            key_passport.hex() if key_passport else "",
            key_name_dob.hex() if key_name_dob else "",
            f"{y:04d}-{m:02d}",
            age_band(age_at(birth, at)) if birth is not None else "",
        ] + values + encodings


# --------------------------------------------------------------------------
# raw.rs: reading the CSV

_SURROGATE = re.compile("[\udc80-\udcff]")


def sniff_delimiter(first_line):
    """The most frequent of ',' ';' tab in the header line; ties go to ','
    then to tab (Rust's max_by_key keeps the last of equal keys)."""
    best = None
    for d in (",", ";", "\t"):
        k = (first_line.count(d), d == ",")
        if best is None or k >= best[0]:
            best = (k, d)
    return best[1]


def run(input_path, key, out_path, org, period, today):
    p = Pseudonymiser(key, org, period, today)
    start = time.perf_counter()

    # Rust reads the whole file, then decodes each row: a row that is not
    # UTF-8 is rejected, not the file. Here: decode strictly; if that
    # fails, decode with surrogateescape and mark rows holding escapes.
    with open(input_path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
        clean = True
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", errors="surrogateescape")
        clean = False
    del data
    nl = text.find("\n")
    reader = csv.reader(io.StringIO(text, newline=""),
                        delimiter=sniff_delimiter(text if nl < 0 else text[:nl]))
    header = next(reader, None)
    if header is None:
        sys.exit(f"{input_path}: the file is empty; it needs a header row")
    header = [rtrim(h) for h in header]
    if not clean and any(_SURROGATE.search(h) for h in header):
        sys.exit(f"{input_path}: a header cell is not UTF-8 text")
    pos = p.header_map(header)
    width = len(header)
    ref_pos = pos[p.ref_index]

    results = []  # (normalised reference, output row or None)
    for row in reader:
        defect = False
        if not clean and _SURROGATE.search("\x00".join(row)):
            defect = True
            row = []
        elif all(not rtrim(c) for c in row):
            continue  # blank row (csv.reader gives [] for an empty line)
        if len(row) > width:
            if any(rtrim(c) for c in row[width:]):
                defect = True
            row = row[:width]
        elif len(row) < width:
            row = row + [""] * (width - len(row))
        reference = normalise_reference(row[ref_pos])
        coded = None if defect else p.code_row([row[i] for i in pos])
        results.append((reference, coded))

    # A reference must be unique within the drop: every row sharing one is
    # rejected.
    seen = {}
    for reference, _ in results:
        if reference:
            seen[reference] = seen.get(reference, 0) + 1

    rows = rejected = 0
    with open(out_path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record_key", "key_passport", "key_name_dob", "event_month", "age_band"]
                   + p.kept + ["enc_name", "enc_dob", "enc_passport", "name_key", "block_keys"])
        for reference, coded in results:
            if coded is None or (reference and seen[reference] > 1):
                rejected += 1
            else:
                w.writerow(coded)
                rows += 1
    seconds = time.perf_counter() - start
    return rows, rejected, seconds


# --------------------------------------------------------------------------
# self-test


def self_test():
    def check(got, want, what):
        if got != want:
            sys.exit(f"self-test failed: {what}: got {got!r}, want {want!r}")

    check(normalise_text("  Dela-Cruz, José "), "dela cruz jose", "normalise_text")
    check(normalise_text("O'Brien"), "obrien", "apostrophe")
    check(normalise_text("D\u2019Souza"), "dsouza", "curly apostrophe")
    check(normalise_text("Strauß"), "strauss", "case folding")
    check(normalise_text("ＪＯＳＥ\u3000ＲＩＺＡＬ"), "jose rizal", "full width")
    check(normalise_text("Nguyễn Văn Đức"), "nguyen van đuc", "marks")
    check(normalise_text("a__b"), "a b", "underscore")
    # The Rust test ascii_fast_path_agrees_with_full_path.
    for s in ["  Dela-Cruz, Juan ", "O'Brien", "MARIA  sta. maria", "a__b", "x`y"]:
        full = normalise_text(s + "\u00e9").replace(" ", "")
        check(full, normalise_text(s).replace(" ", "") + "e", f"fast path {s!r}")

    check(name_tokens("Dela Cruz", "Juan"), ["delacruz", "juan"], "name_tokens")
    for f in ["De la Cruz", "DELA-CRUZ", "DelaCruz"]:
        check(name_tokens(f, "Juan"), ["delacruz", "juan"], f"name_tokens {f!r}")
    check(name_tokens("Sta. Maria", "Ana"), ["ana", "santamaria"], "abbreviation")
    check(name_tokens("", "Ahmad bin Ismail"), ["ahmad", "ismail"], "connector")
    check(name_tokens("Santos", "Maria Sta"), ["maria", "santos", "sta"], "last particle kept")
    check(name_tokens("", ""), [], "blank names")

    check(normalise_passport("P 1234567"), "P1234567", "passport")
    check(normalise_passport("p-123-4567"), "P1234567", "passport dashes")
    check(normalise_passport("ab１２３４５６"), "AB123456", "passport full width")
    check(normalise_passport("  "), None, "blank passport")
    for bad in ["P12/34", "É123", "A123456789012345678901"]:
        try:
            normalise_passport(bad)
            sys.exit(f"self-test failed: passport {bad!r} accepted")
        except PassportError:
            pass

    D = datetime.date
    for s, want in [("2018-03-05", D(2018, 3, 5)), ("2018-3-5", D(2018, 3, 5)),
                    ("05/03/2018", D(2018, 3, 5)), ("5/3/2018", D(2018, 3, 5)),
                    ("2018-03-05 00:00:00", D(2018, 3, 5)), ("2018-03-05T10:30:00", D(2018, 3, 5)),
                    (" 2018-03-05 ", D(2018, 3, 5)), ("2016-02-29", D(2016, 2, 29))]:
        check(parse_date(s), want, f"parse_date {s!r}")
    for s in ["31/02/2018", "2018-13-01", "18-01-01", "01/01/18", "yesterday", "",
              "2018/03/05", "05-03-2018", "2018-02-29", "005/03/2018", "2018.03.05"]:
        try:
            parse_date(s)
            sys.exit(f"self-test failed: date {s!r} accepted")
        except DateError:
            pass
    check(parse_birth_date("1990"), (1990, None), "year alone")
    b = (2000, D(2000, 6, 15))
    check(age_at(b, D(2018, 6, 14)), 17, "age before birthday")
    check(age_at(b, D(2018, 6, 15)), 18, "age on birthday")
    check([age_band(a) for a in (17, 18, 25, 26, 45, 46)],
          ["0-17", "18-25", "18-25", "26-35", "36-45", "46+"], "age bands")

    countries = load_countries()
    for s in ["Indonesia", "indonesian", "ID", "IDN", " idn "]:
        check(nationality(s, countries), "IDN", f"nationality {s!r}")
    for s in ["Philippines", "The Philippines", "Filipino", "Filipina", "PH", "phl"]:
        check(nationality(s, countries), "PHL", f"nationality {s!r}")
    check(nationality("Viet Nam", countries), nationality("VIETNAM", countries), "Viet Nam")
    check(nationality("", countries), None, "blank nationality")
    for s in ["Atlantis", "Congolese"]:
        try:
            nationality(s, countries)
            sys.exit(f"self-test failed: nationality {s!r} accepted")
        except NationalityError:
            pass
    codes = load_code_lists()
    for s in ["Not identified", "not_identified", "NOT-IDENTIFIED", " notidentified "]:
        check(codes["outcome"].get(squash(s)), "not_identified", f"code {s!r}")
    check(codes["sex"].get(squash("F")), "female", "sex F")
    check(codes["yes_no"].get(squash("1")), "yes", "yes_no 1")
    check(normalise_reference("  ab \t 12 "), "AB 12", "reference")

    # RFC 4231 test case 2, then the length-prefixed encoding.
    check(hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest(),
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "RFC 4231")
    check(enc(b"ab", b""), b"\x00\x00\x00\x02ab\x00\x00\x00\x00", "enc")
    key = bytes(range(32))
    manual = hmac.new(key, enc(b"safetally", b"record", b"1", b"screening", b"NGO01", b"C1"),
                      hashlib.sha256).hexdigest()
    k = Keyer(key)
    check(k.record("screening", "NGO01", "C1").hex(), manual, "Keyer.record")
    if k.record("screening", "AB", "C1") == k.record("screening", "A", "BC1"):
        sys.exit("self-test failed: fields not length-prefixed")
    print("record key, key bytes 0..31, form screening, org NGO01, reference C1:")
    print(manual)
    print("ok")


def main():
    if "--self-test" in sys.argv[1:]:
        self_test()
        return
    ap = argparse.ArgumentParser(description="Plain Python peer of safetally pseudonymise (screening).")
    ap.add_argument("input")
    ap.add_argument("keyfile")
    ap.add_argument("output")
    ap.add_argument("--org", required=True)
    ap.add_argument("--period", required=True, help="YYYY-MM")
    ap.add_argument("--today", help="YYYY-MM-DD (default: today's UTC date, as the Rust tool)")
    a = ap.parse_args()
    key = read_key(a.keyfile)
    org = parse_org(a.org)
    period = parse_period(a.period)
    today = (datetime.date.fromisoformat(a.today) if a.today
             else datetime.datetime.now(datetime.timezone.utc).date())
    csv.field_size_limit(2**31 - 1)  # the Rust reader has no field size limit
    rows, rejected, seconds = run(a.input, key, a.output, org, period, today)
    print(json.dumps({
        "rows": rows,
        "rejected": rejected,
        "seconds": round(seconds, 6),
        "rows_per_second": round((rows + rejected) / seconds, 1) if seconds > 0 else 0.0,
    }))


if __name__ == "__main__":
    main()

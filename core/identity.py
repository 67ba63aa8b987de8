"""One canonical spelling for every identity Trove compares.

A deny on ``mallory`` must hold against ``Mallory``, ``MALLORY``, ``mallory ``,
``ｍａｌｌｏｒｙ`` (full-width) and ``mal\u200blory`` (a zero-width space). So
every user (and group) name is brought to one form before it is stored or
compared, on both sides of every comparison:

1. Unicode NFKC (full-width letters, ligatures and compatibility spaces fold),
2. case-folded (``str.casefold``, which also folds ``ß`` to ``ss``), then NFKC
   again, as Unicode's ``NFKC_Casefold`` does,
3. leading and trailing whitespace removed.

A name that still holds a control, format (zero-width, bidi), surrogate,
private-use or unassigned code point, or that is empty or longer than
:data:`MAX_LENGTH`, is refused with :class:`InvalidIdentity`: such a name is
either a mistake or an attempt to look like someone else, and refusing it
fails closed.
"""

from __future__ import annotations

import unicodedata

from core.errors import TroveError

MAX_LENGTH = 256

# The version of this form. Stored ACLs carry it where a name written under an
# older form could let a deny slip (the fingerprint of an ACL with a deny entry,
# OpenSearch's ``acl_identity_form``), so those are found and rewritten. Bump it
# whenever the form changes.
IDENTITY_FORM = 1

# Cc control, Cf format (zero-width joiners, bidi marks), Cs surrogates,
# Co private use, Cn unassigned: none belongs in a name, all can hide in one.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


class InvalidIdentity(TroveError, ValueError):
    """A user or group name that has no safe canonical form (a ``ValueError``, so pydantic
    validators report it as a validation error)."""


def canonical_identity(value: object, *, kind: str = "user") -> str:
    """The canonical form of a user or group name, or :class:`InvalidIdentity`."""
    if not isinstance(value, str):
        raise InvalidIdentity(f"a {kind} name must be a string, not {type(value).__name__}")
    if value.isascii():
        # NFKC leaves ASCII alone and casefold is lower() there: the same result,
        # without the Unicode tables, for the names nearly every ACL holds.
        folded = value.lower().strip()
    else:
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
        folded = folded.strip()
    if not folded:
        raise InvalidIdentity(f"a {kind} name must not be empty")
    if len(folded) > MAX_LENGTH:
        raise InvalidIdentity(f"a {kind} name must be at most {MAX_LENGTH} characters")
    if folded.isascii() and folded.isprintable():
        return folded  # printable ASCII holds no refused character
    for char in folded:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidIdentity(
                f"a {kind} name must not contain the character U+{ord(char):04X} "
                f"({unicodedata.name(char, 'unnamed')})"
            )
    return folded


def canonical_user(value: object) -> str:
    """The canonical form of a user id (an e-mail, a login, a subject claim)."""
    return canonical_identity(value, kind="user")


def canonical_group(value: object) -> str:
    """The canonical form of a group name or group token."""
    return canonical_identity(value, kind="group")


def canonical_tenant(value: object) -> str:
    """The canonical form of a tenant id (compared like a name: one spelling, one tenant)."""
    return canonical_identity(value, kind="tenant")

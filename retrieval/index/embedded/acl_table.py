"""Per-segment ACLs: a table of distinct ACLs plus one code per row.

Chunks of a document share an ACL, and documents mostly share a handful of
policies, so the table is small. A principal's permission mask is computed on
the *table* with token postings (``u:alice``, ``g:hr``, ``du:mallory``,
``dg:contractors``, ``t:acme``) and then gathered to rows — one vectorised
pass whatever the number of rows. The rules are exactly :meth:`core.acl.Acl.permits`:
tenant match (or no tenant), then public or an allowed user/group, and no deny.
Restriction layers (an AND of ORs) get postings of their own, by layer: the
layers a principal's tokens reach are counted per ACL, and an ACL passes when
every one of its layers was reached — also one vectorised pass.

Names are compared in their canonical form (:mod:`core.identity`): an
:class:`~core.acl.Acl` and a :class:`~core.acl.Principal` canonicalise
theirs when built, and :meth:`AclTable.load` builds every stored ACL through
:meth:`~core.acl.Acl.from_dict`, so a table written before the form (a deny
on ``Mallory``) still denies ``mallory``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.acl import Acl, Principal
from retrieval.index.base import IndexCorruptError
from retrieval.index.embedded.files import load_npy, read_json, save_npy, write_json


class AclTable:
    def __init__(self, acls: Sequence[Acl], codes: np.ndarray):
        self.acls = list(acls)
        self.codes = codes
        if len(codes) and (int(codes.max()) >= len(self.acls) or int(codes.min()) < 0):
            raise IndexCorruptError(f"ACL codes out of range for a table of {len(self.acls)}")
        self._public = np.array([a.public for a in self.acls], dtype=bool)
        self._no_tenant = np.array([a.tenant is None for a in self.acls], dtype=bool)
        postings: dict[str, list[int]] = defaultdict(list)
        for i, acl in enumerate(self.acls):
            for u in acl.allow_users:
                postings["u:" + u].append(i)
            for g in acl.allow_groups:
                postings["g:" + g].append(i)
            for u in acl.deny_users:
                postings["du:" + u].append(i)
            for g in acl.deny_groups:
                postings["dg:" + g].append(i)
            if acl.tenant is not None:
                postings["t:" + acl.tenant].append(i)
        self._postings = {t: np.asarray(v, dtype=np.int64) for t, v in postings.items()}
        # Layers: one global id per (ACL, layer); postings from a token to layer ids.
        self._layer_counts = np.array([len(a.layers) for a in self.acls], dtype=np.int64)
        owners: list[int] = []
        layer_postings: dict[str, list[int]] = defaultdict(list)
        for i, acl in enumerate(self.acls):
            for layer in acl.layers:
                lid = len(owners)
                owners.append(i)
                for u in layer.users:
                    layer_postings["u:" + u].append(lid)
                for g in layer.groups:
                    layer_postings["g:" + g].append(lid)
        self._layer_owner = np.asarray(owners, dtype=np.int64)
        self._layer_postings = {t: np.asarray(v, dtype=np.int64) for t, v in layer_postings.items()}

    @classmethod
    def build(cls, row_acls: Sequence[Acl]) -> AclTable:
        index: dict[Acl, int] = {}
        codes = np.fromiter(
            (index.setdefault(a, len(index)) for a in row_acls), dtype=np.int32, count=len(row_acls)
        )
        return cls(list(index), codes)

    def _post(self, token: str) -> np.ndarray:
        return self._postings.get(token, _EMPTY)

    def permitted_acls(self, principal: Principal) -> np.ndarray:
        """Boolean over the table: which ACLs let ``principal`` read."""
        ok = self._public.copy()
        ok[self._post("u:" + principal.user)] = True
        for g in principal.groups:
            ok[self._post("g:" + g)] = True
        ok[self._post("du:" + principal.user)] = False
        for g in principal.groups:
            ok[self._post("dg:" + g)] = False
        tenant_ok = self._no_tenant.copy()
        if principal.tenant is not None:
            tenant_ok[self._post("t:" + principal.tenant)] = True
        ok &= tenant_ok
        if len(self._layer_owner):
            ok &= self._layers_reached(principal) == self._layer_counts
        return ok

    def _layers_reached(self, principal: Principal) -> np.ndarray:
        """Per ACL, how many of its layers admit ``principal`` (distinct layers)."""
        tokens = ["u:" + principal.user, *("g:" + g for g in principal.groups)]
        hits = [self._layer_postings[t] for t in tokens if t in self._layer_postings]
        if not hits:
            return np.zeros(len(self.acls), dtype=np.int64)
        layers = np.unique(np.concatenate(hits))
        return np.bincount(self._layer_owner[layers], minlength=len(self.acls))

    def permitted_rows(self, principal: Principal) -> np.ndarray:
        return self.permitted_acls(principal)[self.codes]

    def with_updates(self, rows: np.ndarray, acl: Acl) -> AclTable:
        """A new table where ``rows`` carry ``acl``; ACLs no row uses any more are dropped."""
        acls = [*self.acls, acl]
        codes = np.array(self.codes, dtype=np.int32)
        codes[rows] = len(acls) - 1
        used, remapped = np.unique(codes, return_inverse=True)
        # Equal ACLs (the new one may equal an old one) collapse to one entry.
        return AclTable.build([acls[int(u)] for u in used]).remap(remapped)

    def remap(self, row_codes: np.ndarray) -> AclTable:
        """Rows given as codes into this table's entries (used to compact after updates)."""
        return AclTable(self.acls, self.codes[row_codes].astype(np.int32))

    def save(self, json_path: Path, codes_path: Path) -> None:
        write_json(json_path, [a.to_dict() for a in self.acls])
        save_npy(codes_path, self.codes.astype(np.int32))

    @classmethod
    def load(cls, json_path: Path, codes_path: Path) -> AclTable:
        """The stored table, its names brought to canonical form whatever form they were in."""
        raw = read_json(json_path)
        if not isinstance(raw, list):
            raise IndexCorruptError(f"{json_path}: expected a list of ACLs")
        return cls([Acl.from_dict(d) for d in raw], load_npy(codes_path))


_EMPTY = np.zeros(0, dtype=np.int64)

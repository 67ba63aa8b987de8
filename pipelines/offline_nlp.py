"""An offline stand-in for the spaCy model that unstructured uses to classify text.

unstructured 0.27 decides between ``NarrativeText``, ``Title`` and
``UncategorizedText`` with spaCy's ``en_core_web_sm``: sentence boundaries and
whether a span "contains a verb" (a Penn ``tag_`` in VB/VBD/VBG/VBN/VBP/VBZ).
On first use it downloads that model from GitHub, which fails offline; worse,
``partition_pdf(strategy="fast")`` swallows the failure and returns no elements.

When the real model is installed we leave unstructured alone. Otherwise
:func:`install_offline_nlp` replaces ``unstructured.nlp.tokenize._get_nlp`` with
a loader for ``spacy.blank("en")`` + ``sentencizer`` + :func:`tag_verbs`, a small
rule-based tagger that marks verbs only. That is all unstructured reads from the
model, and on unstructured's own example documents it gives the same categories.

Usage::

    from pipelines.offline_nlp import install_offline_nlp

    install_offline_nlp()  # idempotent; call before any partition_* call
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from core.runtime import configure_offline_environment

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

SPACY_MODEL = "en_core_web_sm"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TAGGER_NAME = "trove_verb_tagger"

# Fixed forms: be/have/do and frequent irregular verbs, with their Penn tag.
_FIXED_TAGS: dict[str, str] = {
    "be": "VB",
    "am": "VBP",
    "are": "VBP",
    "'re": "VBP",
    "'m": "VBP",
    "is": "VBZ",
    "was": "VBD",
    "were": "VBD",
    "been": "VBN",
    "being": "VBG",
    "have": "VBP",
    "'ve": "VBP",
    "has": "VBZ",
    "had": "VBD",
    "having": "VBG",
    "do": "VBP",
    "does": "VBZ",
    "did": "VBD",
    "done": "VBN",
    "doing": "VBG",
}

# Irregular past tenses and participles (tagged VBD; the tagger does not need to
# tell VBD from VBN apart for unstructured's purposes, but we keep the common
# participles as VBN to stay faithful to Penn).
_IRREGULAR_PAST = _words(
    """
    arose awoke became began bent bet bit bled blew bought broke brought built burnt burst
    caught chose clung came cost crept dealt dug drew dreamt drank drove ate fell fed felt
    fought found fled flung flew forbade forgot forgave froze got gave went ground grew hung
    heard hid hit held hurt kept knelt knew laid led leapt learnt left lent lay lit lost made
    meant met paid quit ran rang rose said sat saw sought sold sent set shook shone shot
    showed shrank shut sang sank slept slid spoke spent spun split spread sprang stood stole
    stuck stung struck strove swore swept swam swung took taught tore told thought threw
    understood undertook woke wore wove wept won wound withdrew wrote
    """
)
_IRREGULAR_PARTICIPLES = _words(
    """
    arisen awoken begun bitten blown broken chosen drawn drunk driven eaten fallen
    flown forbidden forgotten forgiven frozen gotten given gone grown hidden known
    ridden risen seen shaken shown shrunk sung sunk spoken stolen sworn swum taken
    thrown torn undertaken woken worn woven withdrawn written
    """
)
# Frequent base forms; tagged VB after a modal or "to", VBP after a plural pronoun.
_COMMON_BASE = _words(
    """
    accept add allow apply ask become begin believe bring build buy call can change check
    choose come consider contact continue create decide define describe design develop
    do ensure expect explain feel find follow get give go grow happen help hold include
    keep know learn leave let like live look lose make manage mean meet move need offer
    open pay plan play provide put reach read receive remain remember report require
    review run say see seem send serve set show sit speak spend stand start stay stop
    submit support take talk teach tell think try turn understand update use view wait
    want watch work write
    """
)
_MODALS = _words("can could may might must shall should will would 'll ca wo sha")
_SINGULAR_SUBJECTS = _words("he she it this that which who what there here one")
_PLURAL_SUBJECTS = _words("i you we they these those")
_FUNCTION_WORDS = _words(
    """
    a an the this that these those my your our their his her its of in on at for from
    with by and or but not also only as than then so if to all any each no some
    """
)
_VERB_SUFFIXES = ("ate", "ize", "ise", "ify")
# Words that end like verbs but are not (-ing / -ed nouns, adjectives, prepositions).
_NOT_VERBS = _words(
    """
    anything bring ceiling during evening everything king morning nothing ping ring
    sibling something spring sting string swing thing wing pudding wedding herring
    bed bled breed creed embed feed greed hundred indeed need proceed red reed seed
    shed sled speed succeed exceed steed tweed weed wed bred naked sacred wicked
    kindred hatred shred
    """
)


def _is_subject(previous: str | None) -> bool:
    """Whether ``previous`` can end a singular subject: a pronoun or a content word."""
    if previous is None or not previous.isalpha():
        return False
    return previous in _SINGULAR_SUBJECTS or (
        previous not in _FUNCTION_WORDS and previous not in _PLURAL_SUBJECTS
    )


def tag_for(word: str, previous: str | None) -> str | None:
    """The Penn verb tag for ``word`` (lower-cased) after ``previous``, or None if not a verb.

    Deliberately conservative: unstructured only asks "does this span contain a
    verb?", so a missed verb in a long sentence costs nothing while a noun
    mistaken for a verb can turn a heading into narrative text.
    """
    if word in _MODALS:
        return "MD"
    if word in _FIXED_TAGS:
        return _FIXED_TAGS[word]
    if not word.isalpha():
        return None
    if word in _IRREGULAR_PAST:
        return "VBD"
    if word in _IRREGULAR_PARTICIPLES:
        return "VBN"
    if previous in _MODALS and word not in _FUNCTION_WORDS:
        return "VB"  # "can download", "will review"
    if previous == "to" and (word in _COMMON_BASE or word.endswith(_VERB_SUFFIXES)):
        return "VB"  # "to review"; "to" is more often a preposition, so only known verbs
    if previous in _PLURAL_SUBJECTS and (word in _COMMON_BASE or word.endswith(_VERB_SUFFIXES)):
        return "VBP"
    if word.endswith("s") and not word.endswith("ss") and _is_subject(previous):
        stem = word[:-2] if word.endswith("es") else word[:-1]
        if stem in _COMMON_BASE or word[:-1] in _COMMON_BASE:
            return "VBZ"  # "it works", "the system supports"; "the supports" stays a noun
    if word in _NOT_VERBS:
        return None
    if len(word) >= 5 and word.endswith("ing"):
        return "VBG"
    if len(word) >= 5 and word.endswith("ed") and not word.endswith("eed"):
        return "VBN" if previous in _FIXED_TAGS else "VBD"
    return None


def tag_verbs(doc: Doc) -> Doc:
    """spaCy pipeline component: set ``token.tag_`` for verbs and modals, leave others empty."""
    previous: str | None = None
    for token in doc:
        lower = token.lower_
        tag = tag_for(lower, previous)
        if tag is not None:
            token.tag_ = tag
        if not token.is_space:
            previous = lower
    return doc


_register_lock = threading.Lock()
_registered = False


def _register_component() -> None:
    """Register :func:`tag_verbs` with spaCy once per process (re-registering raises)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from spacy.language import Language

        Language.component(_TAGGER_NAME, func=tag_verbs)
        _registered = True


@lru_cache(maxsize=1)
def load_offline_nlp() -> Language:
    """The stand-in pipeline: blank English tokenizer, rule sentencizer, verb tagger."""
    import spacy

    _register_component()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(_TAGGER_NAME)
    return nlp


def real_model_installed() -> bool:
    """True when spaCy's ``en_core_web_sm`` is installed, so unstructured can load it offline."""
    import spacy.util

    return bool(spacy.util.is_package(SPACY_MODEL))


def import_spacy_without_torch() -> bool:
    """Import spaCy with PyTorch hidden, so that thinc does not load it (much of the import).

    thinc (under spaCy) imports ``torch`` whenever it is installed, and Trove
    installs it for the embedder; neither the stand-in nor ``en_core_web_sm``
    needs it. For the parse worker's child process, at start-up, while it has a
    single thread: ``torch`` is hidden only during this import, so anything that
    imports it later gets the real one (thinc just keeps believing it absent).
    Does nothing when torch or spaCy is already imported.

    :returns: True when spaCy was imported here.
    """
    if "torch" in sys.modules or "spacy" in sys.modules:
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail
    try:
        import spacy  # noqa: F401
    except ImportError:
        return False
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return True


_install_lock = threading.Lock()
_installed: bool | None = None


def install_offline_nlp() -> bool:
    """Make unstructured's text classifier work offline; idempotent and thread-safe.

    :returns: True when the stand-in is in use, False when the real model is installed.
    """
    global _installed
    if _installed is not None:
        return _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        # Importing unstructured pings an analytics host unless told not to; the edges
        # (CLI, Dagster, tests) normally set this, but a library caller may not have.
        configure_offline_environment()
        if real_model_installed():
            _installed = False
            return False
        import unstructured.nlp.tokenize as tokenize

        tokenize._get_nlp = load_offline_nlp
        # Results cached by a previous loader (none, offline) must not survive the swap.
        for cached in (tokenize._process_cached, tokenize.word_tokenize, tokenize.pos_tag):
            cached.cache_clear()
        tokenize._tokenize_for_cache.cache_clear()
        _installed = True
        return True


def pos_tags(text: str) -> Sequence[tuple[str, str]]:
    """(token, tag) pairs from the stand-in; for tests and debugging."""
    return [(t.text, t.tag_) for t in load_offline_nlp()(text)]

"""Well-kept libraries that could replace or back a guard detector, measured beside ours.

    python -m bench.guard_libraries           # the table
    python -m bench.guard_libraries --misses  # also every candidate's false hits and misses

None of the libraries is a gwc dependency; this bench alone needs them:

    .venv/bin/pip install phonenumbers python-stdnum detect-secrets presidio-analyzer

For each detector kind that a library covers, every candidate runs over the same labelled
lines of that kind as `bench.guards` (`bench/guard_cases.jsonl`), and a line is a hit when
the candidate finds anything of that kind in it. Printed per candidate: true and false
hits and misses, precision, recall, the mean µs per line (best of three passes), and the
time and the number of hits on one 4,000-token prose prompt with numbers and dates in it
and no hit (`bench.overhead.prompt`), since detectors run on every guarded request.

The candidates:

- `ours`: `policies.detectors.detect(text, [kind])`.
- phonenumbers (Google's libphonenumber): `PhoneNumberMatcher` at leniency VALID, with
  no region (only numbers written with `+` can be read) and once per region of
  Presidio's default list, a hit in any counting; and `ours + phonenumbers`: our hits
  kept only where `is_valid_number` holds (`00` read as `+`, national shapes tried in
  those regions), the library backing our scan.
- python-stdnum, which validates a number it is given and scans nothing: `ours +
  stdnum.iban` and `ours + stdnum.us.ssn` keep our hits it calls valid (an SSN's
  spaces read as dashes, the only separator stdnum takes); for cards, our scan with
  `stdnum.luhn.is_valid` swapped in for our `_luhn`, and once for our whole `_card_ok`
  (Luhn and the issuers' prefixes and lengths: stdnum has no issuer table).
- detect-secrets (Yelp): `scan_line` on each line of the text, with its default filters;
  once with the plugins that know a credential's format (keyword, high-entropy and
  public-IP plugins left out) and once with every plugin, a high-entropy string
  counting only over its plugin's limit, as `detect-secrets scan --string` reports.
- presidio-analyzer (Microsoft): `AnalyzerEngine.analyze(text, "en", [entity])` at its
  default score threshold (0: everything it returns). Its recognizers for these
  entities are patterns and checksums that need no NER model, so it runs on its
  `NoOpNlpEngine`: spaCy's English models are not on PyPI, the only registry here. A
  real spaCy model would add its pipeline's time to every call, and nothing to these
  entities but context-word score boosts, which a zero threshold doesn't need.

The labels follow our definitions (`policies.detectors`' docstring). Where a library
counts differently by design (libphonenumber reads a bare national number, or a date
and the number after it, as a phone; stdnum refuses the SSNs printed in advertising and
IBANs whose national check digits or bank code it doesn't accept), `--misses` shows the
lines, so a lower figure can be read as a different definition or a miss.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.guards import Case, load, precision, recall
from bench.overhead import prompt
from policies import detectors
from policies.detectors import detect

PIP = ".venv/bin/pip install phonenumbers python-stdnum detect-secrets presidio-analyzer"
MODULES = {
    "phonenumbers": "phonenumbers",
    "stdnum": "python-stdnum",
    "detect_secrets": "detect-secrets",
    "presidio_analyzer": "presidio-analyzer",
}
# Presidio's PhoneRecognizer default: the regions a national number is tried in.
REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
PRESIDIO_ENTITIES = {
    "email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "credit_card": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "ssn": "US_SSN",
    "ip_address": "IP_ADDRESS",
}
PROMPT_TOKENS = 4000


@dataclass(frozen=True)
class Candidate:
    """One way of detecting `kind`: `count(text)` is how many hits it finds."""

    kind: str
    name: str
    count: Callable[[str], int]


@dataclass(frozen=True)
class Result:
    """A candidate's counts over its kind's lines, its timings and what it got wrong."""

    candidate: Candidate
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int
    us_per_line: float
    prompt_ms: float
    prompt_hits: int
    wrong: tuple[Case, ...]

    @property
    def precision(self) -> float:
        return precision(self.true_pos, self.false_pos)

    @property
    def recall(self) -> float:
        return recall(self.true_pos, self.false_neg)


def libraries() -> dict[str, Any]:
    """The libraries' modules, or a `SystemExit` naming the install line."""
    found: dict[str, Any] = {}
    missing = []
    for module, package in MODULES.items():
        try:
            found[module] = importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise SystemExit(
            f"bench.guard_libraries needs {', '.join(missing)}, which gwc doesn't depend on."
            f"\nInstall them into the venv for this bench:\n\n    {PIP}\n"
        )
    return found


# --- ours ------------------------------------------------------------------


def ours(kind: str) -> Candidate:
    return Candidate(kind, "ours", lambda text: len(detect(text, [kind])))


def backed(kind: str, name: str, valid: Callable[[str], bool]) -> Candidate:
    """Ours, each hit kept only where the library calls its text valid."""

    def count(text: str) -> int:
        return sum(valid(text[h.start : h.end]) for h in detect(text, [kind]))

    return Candidate(kind, name, count)


# --- phonenumbers ----------------------------------------------------------


def phone_candidates() -> list[Candidate]:
    import phonenumbers

    valid_leniency = phonenumbers.Leniency.VALID

    def matcher(regions: tuple[str | None, ...]) -> Callable[[str], int]:
        def count(text: str) -> int:
            spans = {
                (m.start, m.end)
                for region in regions
                for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=valid_leniency)
            }
            return len(spans)

        return count

    def parses_valid(raw: str, region: str | None) -> bool:
        try:
            return bool(phonenumbers.is_valid_number(phonenumbers.parse(raw, region)))
        except phonenumbers.NumberParseException:
            return False

    def valid(raw: str) -> bool:
        if raw.startswith("00"):
            raw = "+" + raw[2:]
        if raw.lstrip("(").startswith("+"):
            return parses_valid(raw, None)
        return any(parses_valid(raw, region) for region in REGIONS)

    return [
        Candidate("phone", "phonenumbers, no region", matcher((None,))),
        Candidate("phone", f"phonenumbers, {len(REGIONS)} regions", matcher(REGIONS)),
        backed("phone", "ours + phonenumbers", valid),
    ]


# --- python-stdnum ---------------------------------------------------------


def swapped(kind: str, name: str, check: str, replacement: Callable[[str], bool]) -> Candidate:
    """Ours with the library's function in place of our check `check` (a function of
    `policies.detectors`, looked up when called), swapped in for each call only."""
    original = getattr(detectors, check)

    def count(text: str) -> int:
        setattr(detectors, check, replacement)
        try:
            return len(detect(text, [kind]))
        finally:
            setattr(detectors, check, original)

    return Candidate(kind, name, count)


def stdnum_candidates() -> list[Candidate]:
    from stdnum import iban, luhn
    from stdnum.us import ssn

    def card_luhn_only(digits: str) -> bool:
        return 13 <= len(digits) <= 19 and bool(luhn.is_valid(digits))

    def ssn_valid(raw: str) -> bool:
        return bool(ssn.is_valid(raw.replace(" ", "-")))  # stdnum reads dashes only

    return [
        swapped("credit_card", "ours, stdnum.luhn for _luhn", "_luhn", luhn.is_valid),
        swapped("credit_card", "ours, stdnum.luhn, no issuers", "_card_ok", card_luhn_only),
        backed("iban", "ours + stdnum.iban", iban.is_valid),
        backed("ssn", "ours + stdnum.us.ssn", ssn_valid),
    ]


# --- detect-secrets --------------------------------------------------------

_LEFT_OUT = ("KeywordDetector", "IPPublicDetector")  # no credential format; IPs aren't secrets


class _SecretScan:
    """`scan_line` under one plugin configuration, switched to when the scan runs (the
    library's settings are global; the bench runs one candidate at a time)."""

    active: _SecretScan | None = None

    def __init__(self, plugins: list[dict[str, str]]) -> None:
        self.plugins = plugins

    def __call__(self, text: str) -> int:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
        from detect_secrets.settings import (
            cache_bust,
            configure_settings_from_baseline,
            get_plugins,
        )

        if _SecretScan.active is not self:
            cache_bust()
            configure_settings_from_baseline({"plugins_used": self.plugins})
            _SecretScan.active = self
        by_type = {p.secret_type: p for p in get_plugins()}
        found = 0
        for line in text.splitlines():
            for secret in scan_line(line):
                plugin = by_type[secret.type]
                # Ad hoc scans report every string; the limit decides, as the CLI prints.
                if isinstance(plugin, HighEntropyStringsPlugin) and (
                    plugin.calculate_shannon_entropy(secret.secret_value) <= plugin.entropy_limit
                ):
                    continue
                found += 1
        return found


def secret_candidates() -> list[Candidate]:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

    classes = get_mapping_from_secret_type_to_class().values()
    every = [{"name": c.__name__} for c in classes]
    formats = [
        {"name": c.__name__}
        for c in classes
        if not issubclass(c, HighEntropyStringsPlugin) and c.__name__ not in _LEFT_OUT
    ]
    return [
        Candidate("secret", f"detect-secrets, {len(formats)} format plugins", _SecretScan(formats)),
        Candidate("secret", f"detect-secrets, all {len(every)} plugins", _SecretScan(every)),
    ]


# --- presidio --------------------------------------------------------------


def presidio_candidates() -> list[Candidate]:
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    # The email recognizer asks tldextract, which would fetch the public suffix list
    # from the internet; the snapshot it ships is the offline answer.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # that context words need tokens NoOp doesn't make
        engine = AnalyzerEngine(
            nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}]),
            supported_languages=["en"],
        )

    def analyzer(entity: str) -> Callable[[str], int]:
        return lambda text: len(engine.analyze(text=text, language="en", entities=[entity]))

    return [
        Candidate(kind, "presidio", analyzer(entity)) for kind, entity in PRESIDIO_ENTITIES.items()
    ]


# --- the bench -------------------------------------------------------------


def candidates() -> Iterator[Candidate]:
    """Every candidate, grouped by kind in `bench.guards`' order, ours first in each."""
    libraries()
    others = [
        *phone_candidates(),
        *stdnum_candidates(),
        *secret_candidates(),
        *presidio_candidates(),
    ]
    kinds = dict.fromkeys(c.kind for c in others)
    for kind in ("email", "phone", "credit_card", "iban", "ssn", "ip_address", "secret"):
        if kind in kinds:
            yield ours(kind)
            yield from (c for c in others if c.kind == kind)


def measure(candidate: Candidate, cases: list[Case], text: str) -> Result:
    lines = [c for c in cases if c.kind == candidate.kind]
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    wrong = []
    for case in lines:
        found = candidate.count(case.text) > 0
        counts[("t" if found == case.hit else "f") + ("p" if found else "n")] += 1
        if found != case.hit:
            wrong.append(case)
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        for case in lines:
            candidate.count(case.text)
        passes.append(time.perf_counter() - start)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        hits = candidate.count(text)
        runs.append(time.perf_counter() - start)
    return Result(
        candidate, counts["tp"], counts["fp"], counts["fn"], counts["tn"],
        min(passes) / len(lines) * 1e6, min(runs) * 1e3, hits, tuple(wrong),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list false hits and misses")
    args = parser.parse_args()
    cases = load()
    text = prompt(PROMPT_TOKENS)
    todo = list(candidates())
    width = max(len(c.name) for c in todo)
    print(f"{'detector':<12} {'candidate':<{width}} {'tp':>3} {'fp':>3} {'fn':>3} "
          f"{'precision':>9} {'recall':>7} {'µs/line':>8} {'4k ms':>8} {'4k hits':>7}")  # fmt: skip
    results = []
    kind = ""
    for candidate in todo:
        r = measure(candidate, cases, text)
        results.append(r)
        if candidate.kind != kind and kind:
            print()
        kind = candidate.kind
        print(
            f"{candidate.kind:<12} {candidate.name:<{width}} {r.true_pos:>3} {r.false_pos:>3} "
            f"{r.false_neg:>3} {r.precision:>9.1%} {r.recall:>7.1%} {r.us_per_line:>8.1f} "
            f"{r.prompt_ms:>8.3f} {r.prompt_hits:>7}"
        )
    print(f"\nthe 4k prompt: {len(text):,} characters, no hit of any kind by our definitions")
    if args.misses:
        for r in results:
            for case in r.wrong:
                label = "miss" if case.hit else "false hit"
                name = r.candidate.name
                print(f"{r.candidate.kind:<12} {name:<{width}} {label:<9} {case.text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``inboxlab classify``: what an SMTP reply means and what to do about it, as JSON.

Single mode prints one JSON object for TEXT; ``--jsonl`` reads JSON lines
``{"provider"?, "code"?, "enhanced"?, "text"}`` from stdin and writes one JSON line per input
line, in order; a malformed line yields ``{"error": ..., "line": n}`` and processing goes on.
Owns only the command-line surface; the decisions are ``engine.policy.classify``'s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from engine.policy.classify import Classifier

_FIELDS = {"provider", "code", "enhanced", "text", "id"}


def _coerce_code(value: Any) -> int | None:
    """A JSON code: null, an integer, or a string of digits; anything else is an error."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("code must be an integer")
    if isinstance(value, int):
        code = value
    elif isinstance(value, str) and value.strip().isdigit():
        code = int(value.strip())
    else:
        raise ValueError("code must be an integer")
    if not 200 <= code <= 599:
        raise ValueError(f"code must be 200..599, got {code}")
    return code


def _one_line(classifier: Classifier, raw: str, lineno: int) -> dict[str, Any]:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {"error": f"invalid JSON: {exc.msg} at column {exc.colno}", "line": lineno}
    if not isinstance(item, dict):
        return {"error": "expected a JSON object", "line": lineno}
    text = item.get("text")
    if not isinstance(text, str):
        return {"error": "missing or non-string field 'text'", "line": lineno}
    provider = item.get("provider")
    if provider is not None and not isinstance(provider, str):
        return {"error": "field 'provider' must be a string", "line": lineno}
    enhanced = item.get("enhanced")
    if enhanced is not None and not isinstance(enhanced, str):
        return {"error": "field 'enhanced' must be a string", "line": lineno}
    try:
        code = _coerce_code(item.get("code"))
    except ValueError as exc:
        return {"error": str(exc), "line": lineno}
    out = classifier.classify(provider, code, text, enhanced).as_dict()
    if "id" in item:
        out = {"id": item["id"], **out}
    return out


def register(app: typer.Typer) -> None:
    @app.command("classify")
    def classify(
        text: Annotated[
            str | None, typer.Argument(help="The reply text, e.g. '550 5.1.1 ...'.")
        ] = None,
        provider: Annotated[
            str | None,
            typer.Option("--provider", "-p", help="Profile name, recipient domain or MX host."),
        ] = None,
        code: Annotated[
            int | None, typer.Option("--code", help="Basic SMTP code, if not in TEXT.")
        ] = None,
        enhanced: Annotated[
            str | None, typer.Option("--enhanced", help="Enhanced code, e.g. 5.1.1.")
        ] = None,
        jsonl: Annotated[bool, typer.Option("--jsonl", help="Read JSON lines from stdin.")] = False,
        profiles_dir: Annotated[
            Path | None,
            typer.Option(
                "--profiles", help="Provider profile folder (default fixtures/providers)."
            ),
        ] = None,
    ) -> None:
        """Classify an SMTP reply: temporary?, category, action, scope, retry, rule, reasons."""
        from engine.errors import InputError
        from engine.policy.classify import Classifier
        from engine.profiles import load_profiles

        classifier = Classifier(load_profiles(profiles_dir))
        if jsonl:
            if text is not None:
                raise InputError("give TEXT or --jsonl, not both")
            out = sys.stdout
            for lineno, raw in enumerate(sys.stdin, start=1):
                if not raw.strip():
                    continue
                out.write(json.dumps(_one_line(classifier, raw, lineno)) + "\n")
                out.flush()
            return
        if text is None:
            raise InputError("missing TEXT (or use --jsonl to read JSON lines from stdin)")
        if code is not None and not 200 <= code <= 599:
            raise InputError(f"--code must be 200..599, got {code}")
        verdict = classifier.classify(provider, code, text, enhanced)
        typer.echo(json.dumps(verdict.as_dict()))

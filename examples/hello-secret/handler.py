"""Demo handler for the Python runtime: shows which secrets arrived, never their values.

The one exception is a key named ``greeting``: the demo stores a harmless greeting there, and
returning it shows that the actual value, not just its name, reached the function.
"""

from __future__ import annotations

from typing import Any


def handle(event: Any, context: Any) -> dict[str, Any]:
    names = sorted(context.secrets)
    result: dict[str, Any] = {
        "function": context.function,
        "secrets": {name: sorted(context.secrets[name]) for name in names},
    }
    for name in names:
        greeting = context.secrets[name].get("greeting")
        if isinstance(greeting, str):
            result["greeting"] = greeting
            break
    return {"statusCode": 200, "body": result}

"""An OpenAI chat request read field by field, for the adapters that translate it.

The gateway's own check (runtime/schemas.py) covers the fields it routes on
and passes the rest through as the client sent them, so a translator meets
anything JSON can hold. Each reader here returns the field in one plain shape
or raises a 400 naming it (`messages[1].tool_calls[0].function`), never
another exception. Types are as strict as the schema's: a number is a JSON
number, not a string of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from runtime.providers.wire import NUMBERS, Body, invalid


@dataclass(frozen=True, slots=True)
class Part:
    """A content part: `text`, or an image by `url` (a `data:` URL or a link)."""

    text: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: Body


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Body | None


def _objects(found: Any, name: str) -> list[tuple[Body, str]]:
    """A list field's items, each checked to be an object, with where it stands."""
    if not isinstance(found, list):
        raise invalid(name, "must be a list")
    out = []
    for i, item in enumerate(found):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise invalid(where, "must be an object")
        out.append((item, where))
    return out


def messages(body: Body) -> list[tuple[str, Body, str]]:
    """(role, message, where) for each message."""
    out = []
    for message, where in _objects(body.get("messages"), "messages"):
        role = message.get("role")
        if not isinstance(role, str):
            raise invalid(f"{where}.role", "must be a string")
        out.append((role, message, where))
    return out


def parts(content: Any, where: str) -> list[Part]:
    """A message's content as parts: text, refusals (as text), images, and files given
    inline (a PDF, as a `data:` URL like an inline image's)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Part(text=content)] if content else []
    if not isinstance(content, list):
        raise invalid(where, "must be a string or a list of content parts")
    out = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise invalid(here, "must be an object")
        kind = part.get("type")
        if kind in ("text", "refusal"):
            value = part.get(kind)
            if not isinstance(value, str):
                raise invalid(f"{here}.{kind}", "must be a string")
            out.append(Part(text=value))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url:
                raise invalid(f"{here}.image_url", "must be an object with a `url` string")
            out.append(Part(url=url))
        elif kind == "file":
            found = part.get("file")
            data = found.get("file_data") if isinstance(found, dict) else None
            if not isinstance(data, str) or data_url(data) is None:
                raise invalid(f"{here}.file", "only a file given inline as a base64 `data:` "
                                              "URL in `file_data` can be sent to this provider")
            out.append(Part(url=data))
        else:
            raise invalid(f"{here}.type", f"content of type `{kind}` cannot be sent to this "
                                          "provider")
    return out


def text_of(content: Any, where: str) -> str:
    """Content that can only be text (a system message, a tool result)."""
    found = parts(content, where)
    if any(p.text is None for p in found):
        raise invalid(where, "only text can go here for this provider")
    return "".join(p.text or "" for p in found)


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:...;base64,...` URL."""
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return media, data
    return None


def arguments(value: Any) -> Body:
    """A tool call's arguments as an object. A string that is not a JSON object
    (a model's output cut short, echoed back) becomes `{}`, as OpenAI takes it."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _function(holder: Body, where: str) -> tuple[Body, str]:
    """A tool's or a tool call's `function` object and its name, both checked."""
    function = holder.get("function")
    if not isinstance(function, dict):
        raise invalid(f"{where}.function", "must be an object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}.function.name", "must be a non-empty string")
    return function, name


def tool_calls(message: Body, where: str) -> list[Call]:
    found = message.get("tool_calls")
    if found is None:
        return []
    out = []
    for call, here in _objects(found, f"{where}.tool_calls"):
        function, name = _function(call, here)
        ident = call.get("id")
        if ident is not None and not isinstance(ident, str):
            raise invalid(f"{here}.id", "must be a string")
        out.append(Call(ident or "", name, arguments(function.get("arguments"))))
    return out


def tools(body: Body) -> list[Tool]:
    found = body.get("tools")
    if found is None:
        return []
    out = []
    for tool, where in _objects(found, "tools"):
        if tool.get("type", "function") != "function":
            raise invalid(f"{where}.type", f"tools of type `{tool.get('type')}` cannot be sent "
                                           "to this provider")
        function, name = _function(tool, where)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"{where}.function.description", "must be a string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid(f"{where}.function.parameters", "must be an object")
        out.append(Tool(name, description or "", parameters or None))
    return out


def tool_choice(body: Body) -> str | None:
    """"auto", "none", "required", or "function:NAME"; None when not given."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        return choice  # type: ignore[no-any-return]
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return f"function:{name}"
        raise invalid("tool_choice.function.name", "must be a non-empty string")
    raise invalid("tool_choice", 'must be "auto", "none", "required" or a function')


def stop(body: Body) -> list[str] | None:
    found = body.get("stop")
    if found is None or found == "" or found == []:
        return None
    if isinstance(found, str):
        return [found]
    if isinstance(found, list) and all(isinstance(s, str) for s in found):
        return found
    raise invalid("stop", "must be a string or a list of strings")


def number(body: Body, key: str) -> float | None:
    found = body.get(key)
    if found is None:
        return None
    if type(found) in NUMBERS:
        return float(found)
    raise invalid(key, "must be a number")


def integer(body: Body, key: str) -> int | None:
    """An integer; a float with nothing after the point (JSON's `2.0`) is taken as one."""
    found = body.get(key)
    if isinstance(found, int) and not isinstance(found, bool):
        return found
    value = number(body, key)
    if value is None:
        return None
    if not value.is_integer():
        raise invalid(key, "must be an integer")
    if abs(value) >= 2**63:  # JSON's 1e19 is whole, but no upstream call could carry it
        raise invalid(key, "is out of range")
    return int(value)


def user(body: Body) -> str | None:
    found = body.get("user")
    if found is None or found == "":
        return None
    if not isinstance(found, str):
        raise invalid("user", "must be a string")
    return found

"""The functions an agent can call or execute: captured by name and schema, put back from the caller's callables.

A function reaches an AG2 agent in two roles: *llm* (the model may call it: ``register_for_llm``,
``register_function(caller=...)``, ``functions=``, tools in ``llm_config``) and *execution* (the
agent runs it: ``register_for_execution``, ``register_function(executor=...)``, ``function_map=``).
A checkpoint keeps, per agent, each function's name, description, JSON schema and roles (never
code); a rebuild takes the callables by name and registers them on the same agents, in the same
roles, with the stored schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autogen import ConversableAgent
from autogen.tools import Tool

__all__ = ["capture_functions", "function_names", "restore_functions"]


def _schemas(agent: ConversableAgent) -> dict[str, tuple[str, dict[str, Any], str]]:
    """Name -> (description, parameters, api style) of what the agent's model is told it can call."""
    out: dict[str, tuple[str, dict[str, Any], str]] = {}
    config = agent.llm_config
    if not config:
        return out
    for entry in list(config.get("tools") or []):
        fn = entry.get("function") if isinstance(entry, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            out[fn["name"]] = (str(fn.get("description") or ""), dict(fn.get("parameters") or {}), "tool")
    for fn in list(config.get("functions") or []):
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            out[fn["name"]] = (str(fn.get("description") or ""), dict(fn.get("parameters") or {}), "function")
    return out


def capture_functions(agent: Any) -> list[dict[str, Any]]:
    """Every function ``agent`` can call (llm) or execute, as JSON: name, description, schema, roles."""
    if not isinstance(agent, ConversableAgent):
        return []
    schemas = _schemas(agent)
    tools = {t.name: t for t in agent.tools}
    out: dict[str, dict[str, Any]] = {}
    for name, (description, parameters, style) in schemas.items():
        # "registered": a function stands behind the schema (register_for_llm, functions=); a schema
        # written straight into llm_config has none, and a rebuild needs none for it.
        out[name] = {"name": name, "description": description, "parameters": parameters, "roles": ["llm"],
                     "api_style": style, "registered": name in tools}
    for name, fn in agent.function_map.items():
        entry = out.setdefault(name, {"name": name, "roles": []})
        entry["roles"].append("execution")
        entry["wrapped"] = hasattr(fn, "_origin")  # register_for_execution wraps; function_map= does not
        tool = tools.get(name)
        if "description" not in entry and tool is not None:
            entry["description"] = tool.description
            entry["parameters"] = dict(tool.tool_schema.get("function", {}).get("parameters") or {})
    return [out[n] for n in sorted(out)]


def function_names(states: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every function name the stored agent states need, once, sorted."""
    names = {str(f.get("name")) for s in states.values() for f in (s.get("functions") or []) if isinstance(f, Mapping)}
    return sorted(names)


def restore_functions(agent: ConversableAgent, stored: Any, functions: Mapping[str, Callable[..., Any]]) -> list[str]:
    """Register the caller's callables on ``agent`` in their stored roles; the names it lacks."""
    missing = []
    for spec in stored or []:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            continue
        name = spec["name"]
        fn = functions.get(name)
        roles = spec.get("roles") or []
        if roles == ["llm"] and spec.get("registered") is False:
            continue  # only a schema in llm_config, which came back with it
        if fn is None:
            missing.append(name)
            continue
        parameters = spec.get("parameters")
        tool = Tool(
            name=name,
            description=str(spec.get("description") or ""),
            func_or_tool=fn,
            parameters_json_schema=dict(parameters) if isinstance(parameters, Mapping) and parameters else None,
        )
        if "llm" in roles and tool not in agent._tools:
            agent._tools.append(tool)  # its schema is already in the stored llm_config, exactly as it was
        if "execution" in roles:
            if spec.get("wrapped", True):
                agent.register_for_execution(name=name, silent_override=True)(tool)
            else:
                agent.register_function({name: fn}, silent_override=True)
    return missing

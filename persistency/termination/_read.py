"""Reading a termination lambda or function from its source into an expression tree, by ``ast``.

The function's source is found the way ``inspect`` does (``co_filename`` through ``linecache``,
which also holds notebook cells and ``__main__`` scripts), the whole file is parsed, and the node
is picked by its first line and, when several lambdas share that line, by the columns of the code
object's own instructions. Its body must be one expression of the grammar of `_expr`; names other
than the message parameter must be bound (default argument, closure cell, module global) to
strings when the spec is taken. Nothing is called or evaluated to read it. A source that does not
match the code object (the file changed since) is refused, and the condition stays "custom".
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import linecache
import textwrap
import types
from collections.abc import Iterator
from typing import Any

from persistency.termination._expr import FUNCTIONS, METHODS, check_tree

__all__ = ["read_condition"]

_OPS: dict[type[ast.cmpop], str] = {
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.GtE: ">=",
    ast.Gt: ">",
    ast.LtE: "<=",
    ast.Lt: "<",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_MAX_SOURCE = 200_000


class _Refused(Exception):
    """The source is outside the grammar (internal: the condition stays custom)."""


def _positions(code: types.CodeType) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The source spans of the code's instructions (the empty span of its prologue left out)."""
    out: list[tuple[tuple[int, int], tuple[int, int]]] = []
    positions = getattr(code, "co_positions", None)  # Python 3.11+; on 3.10 every lambda of the line is a candidate
    if positions is None:
        return out
    for line, end_line, col, end_col in positions():
        if line is None or end_line is None or col is None or end_col is None or (line, col) == (end_line, end_col):
            continue
        out.append(((line, col), (end_line, end_col)))
    return out


def _inside(node: ast.expr, spans: list[tuple[tuple[int, int], tuple[int, int]]]) -> bool:
    start = (node.lineno, node.col_offset)
    end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
    return all(start <= a and b <= end for a, b in spans)


@functools.lru_cache(maxsize=16)
def _parse(text: str) -> ast.AST | None:
    """The module's tree, parsed once for all the conditions of a run's agents (never changed by readers)."""
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _file_tree(code: types.CodeType, module_globals: dict[str, Any]) -> ast.AST | None:
    text = "".join(linecache.getlines(code.co_filename, module_globals))
    if not text or len(text) > _MAX_SOURCE:
        return None
    return _parse(text)


def _fragment_lambdas(fn: types.FunctionType) -> Iterator[ast.Lambda]:
    """Lambdas in the lines ``inspect`` gives for ``fn`` when the whole file does not parse (a cell)."""
    try:
        text = textwrap.dedent("".join(inspect.getsourcelines(fn)[0]))
    except (OSError, TypeError):
        return
    if len(text) > 4000:
        return
    start = text.find("lambda")
    while start >= 0:
        for end in range(len(text), start, -1):
            try:
                node = ast.parse(text[start:end].strip(), mode="eval").body
            except SyntaxError:
                continue
            if isinstance(node, ast.Lambda):
                yield node
            break
        start = text.find("lambda", start + 1)


def _find_nodes(fn: types.FunctionType) -> list[ast.Lambda] | list[ast.FunctionDef]:
    code = fn.__code__
    tree = _file_tree(code, fn.__globals__)
    if code.co_name == "<lambda>":
        if tree is not None:
            points = _positions(code)
            found = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Lambda) and n.lineno == code.co_firstlineno and _inside(n.body, points)
            ]
        else:
            names = list(code.co_varnames[: code.co_argcount])
            found = [n for n in _fragment_lambdas(fn) if [a.arg for a in n.args.args] == names]
        return found
    if tree is None:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        except (OSError, TypeError, SyntaxError):
            return []
        return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == code.co_name]
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef)
        and n.name == code.co_name
        and min([n.lineno, *(d.lineno for d in n.decorator_list)]) == code.co_firstlineno
    ]


def _body(node: ast.Lambda | ast.FunctionDef) -> ast.expr:
    if isinstance(node, ast.Lambda):
        return node.body
    stmts = list(node.body)
    if stmts and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant):
        stmts = stmts[1:]  # the docstring
    if len(stmts) != 1 or not isinstance(stmts[0], ast.Return) or stmts[0].value is None:
        raise _Refused
    return stmts[0].value


class _Reader:
    """Turns one function's body into a tree, resolving its names the way Python's scoping would."""

    def __init__(self, fn: types.FunctionType, node: ast.Lambda | ast.FunctionDef) -> None:
        self.fn = fn
        self.code = fn.__code__
        args = node.args
        if args.vararg or args.kwarg:
            raise _Refused
        positional = [a.arg for a in [*args.posonlyargs, *args.args]]
        if not positional or positional != list(self.code.co_varnames[: len(positional)]):
            raise _Refused
        self.param = positional[0]
        defaults = list(fn.__defaults__ or ())
        self.bound: dict[str, Any] = {}
        if len(defaults) > len(positional) - 1:
            raise _Refused  # the message parameter itself has a default: not a one-argument condition
        for name, value in zip(positional[len(positional) - len(defaults) :], defaults, strict=True):
            self.bound[name] = value
        for a in args.kwonlyargs:
            kw = fn.__kwdefaults__ or {}
            if a.arg not in kw:
                raise _Refused
            self.bound[a.arg] = kw[a.arg]
        self.literals: list[Any] = []
        self.attrs: list[str] = []

    def name_value(self, name: str) -> Any:
        """What ``name`` refers to inside the function: a default, a closure cell, a global, a builtin."""
        if name == self.param:
            raise _Refused
        if name in self.bound:
            return self.bound[name]
        if name in self.code.co_freevars:
            cell = (self.fn.__closure__ or ())[self.code.co_freevars.index(name)]
            try:
                return cell.cell_contents
            except ValueError:
                raise _Refused from None
        if name in self.fn.__globals__:
            return self.fn.__globals__[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise _Refused

    def const(self, value: Any, literal: bool) -> dict[str, Any]:
        if isinstance(value, tuple):
            value = list(value)
        if not (value is None or type(value) in (str, int) or (isinstance(value, list) and all(
            isinstance(v, str) for v in value
        ))):
            raise _Refused
        if literal:
            self.literals.append(value)
        return {"op": "const", "value": value}

    def is_param(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id == self.param

    def content_key(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Constant) and node.value == "content"

    def expr(self, node: ast.expr) -> dict[str, Any]:
        if isinstance(node, ast.Constant):
            return self.const(node.value, True)
        if isinstance(node, ast.Name):
            value = self.name_value(node.id)
            if not isinstance(value, str):
                raise _Refused
            return self.const(value, False)
        if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
            return self.const(tuple(e.value for e in node.elts if isinstance(e, ast.Constant)), True)
        if isinstance(node, ast.Subscript) and self.is_param(node.value) and self.content_key(node.slice):
            self.literals.append("content")
            return {"op": "content", "access": "index"}
        if isinstance(node, ast.BoolOp):
            return {"op": "and" if isinstance(node.op, ast.And) else "or", "args": [self.expr(v) for v in node.values]}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            if type(node.operand.value) is not int:
                raise _Refused
            return self.const(-node.operand.value, True)  # ``-1``: folded to one constant by the compiler
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return {"op": "not", "arg": self.expr(node.operand)}
        if isinstance(node, ast.Compare):
            ops = [_OPS.get(type(o)) for o in node.ops]
            if None in ops:
                raise _Refused
            return {"op": "compare", "left": self.expr(node.left), "ops": ops,
                    "rights": [self.expr(c) for c in node.comparators]}
        if isinstance(node, ast.Call) and not node.keywords:
            return self.call(node)
        raise _Refused

    def call(self, node: ast.Call) -> dict[str, Any]:
        func, args = node.func, node.args
        if any(isinstance(a, ast.Starred) for a in args):
            raise _Refused
        if isinstance(func, ast.Attribute) and self.is_param(func.value):
            if func.attr != "get" or not args or not self.content_key(args[0]) or len(args) > 2:
                raise _Refused
            self.attrs.append("get")
            self.literals.append("content")
            if len(args) == 1:
                return {"op": "content", "access": "get"}
            default = self.expr(args[1])
            if default["op"] != "const":
                raise _Refused
            return {"op": "content", "access": "get", "default": default["value"]}
        if isinstance(func, ast.Attribute) and func.attr in METHODS:
            self.attrs.append(func.attr)
            return {"op": "method", "name": func.attr, "obj": self.expr(func.value),
                    "args": [self.expr(a) for a in args]}
        if isinstance(func, ast.Name) and func.id in FUNCTIONS and len(args) == 1:
            if self.name_value(func.id) is not FUNCTIONS[func.id]:
                raise _Refused  # a same-named function of the user's
            return {"op": "call", "func": func.id, "arg": self.expr(args[0])}
        raise _Refused

    def matches_code(self) -> bool:
        """The source read is the one compiled: its literals are constants and its attributes names of the code."""
        consts: list[Any] = []
        stack = list(self.code.co_consts)
        while stack:
            c = stack.pop()
            if isinstance(c, tuple):
                stack.extend(c)
                consts.append(list(c))
            else:
                consts.append(c)
        lits = [x for x in self.literals if x is not None and not (type(x) is int and x in (0, 1, -1))]
        return all(any(type(c) is type(x) and c == x for c in consts) for x in lits) and all(
            a in self.code.co_names for a in self.attrs
        )


def read_condition(fn: Any) -> dict[str, Any] | None:
    """The expression tree of a termination lambda/function within the grammar, or None (custom)."""
    if not isinstance(fn, types.FunctionType):
        return None
    code = fn.__code__
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return None
    trees: list[dict[str, Any]] = []
    for node in _find_nodes(fn):
        try:
            reader = _Reader(fn, node)
            tree = reader.expr(_body(node))
        except (_Refused, RecursionError):
            continue
        if reader.matches_code() and check_tree(tree) is None and tree not in trees:
            trees.append(tree)
    return trees[0] if len(trees) == 1 else None  # two different candidates: never guess

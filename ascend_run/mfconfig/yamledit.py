"""Round-trip editing of MindFormers YAML: comments, key order, quoting and anchors survive.

Why not load-edit-dump: MindFormers configs reuse values through anchors (`data_parallel: &dp 16` and
`dataset_strategy: [[*dp, 1], …]`). PyYAML expands the aliases on load, so an edited `data_parallel` leaves
`dataset_strategy` at the old value. ruamel's round-trip mode keeps the anchors, and builds every alias of
an anchored node as *the same Python object* as the anchor. For a collection that is enough: edit it in
place and every alias follows. For a scalar it is a trap: `mapping[key] = 2` replaces the object at one
position only, and on dump the old object (still holding the anchor) is written at the next alias, so the
anchor silently moves to `dataset_strategy` with the old value. `Document.set` therefore finds every
position that holds the identical anchored object and puts one new anchored object in all of them, and
reports the alias positions it moved.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor, SafeConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.scalarint import ScalarInt
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from ascend_run.errors import ConfigError
from ascend_run.inputs.yamlio import check_bounds, check_brackets, format_loc, read_text

Key = str | int
KeyPath = tuple[Key, ...]

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def parse_key_path(text: str) -> KeyPath:
    """'parallel.dataset_strategy[0][0]' -> ('parallel', 'dataset_strategy', 0, 0).

    A bare all-digit segment (`data_path.1`) is also an index, so shells that eat brackets still work."""
    text = text.strip()
    if not text:
        raise ConfigError("empty key path", fix="write a dotted path such as parallel_config.data_parallel")
    parts: list[Key] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "." and parts:
            pos += 1
        match = _SEGMENT.match(text, pos)
        if not match:
            raise ConfigError(f"cannot read key path {text!r} at character {pos + 1}",
                              fix="write it as a.b.c or a.b[0].c")
        name, index = match.groups()
        if index is not None:
            parts.append(int(index))
        elif name.isdigit():
            parts.append(int(name))
        else:
            parts.append(name)
        pos = match.end()
    return tuple(parts)


def format_key_path(path: KeyPath) -> str:
    """('parallel', 'dataset_strategy', 0, 0) -> 'parallel.dataset_strategy[0][0]' (the deployment
    file's error locations use the same notation)."""
    return format_loc(tuple(path))


def parse_value(text: str) -> Any:
    """A `--set` value read as YAML, so `2`, `[1, 1]`, `null`, `True` and `'07'` mean what they say."""
    yaml = YAML(typ="rt")
    try:
        value = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"value {text!r} is not valid YAML ({str(exc).splitlines()[0]})",
                          fix="quote strings that contain ':', '#' or brackets, e.g. key='a: b'") from None
    tagged = foreign_tag(value)
    if tagged is not None:
        raise ConfigError(f"value {text!r} carries the YAML tag {tagged[1]}; --set takes plain values",
                          fix="write the value without a tag, e.g. key=True or key='a string'")
    return "" if value is None and text.strip() == "" else value


_CORE_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map"))


def _tag_of(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag) if tag is not None else None
    return value if isinstance(value, str) and value not in _CORE_TAGS else None


def foreign_tag(data: Any) -> tuple[KeyPath, str] | None:
    """(key path, tag) of the first node written with a tag other than YAML's core ones (!!python/…, !foo),
    or None. Each shared (aliased) node is visited once."""
    seen: set[int] = set()
    stack: list[tuple[Any, KeyPath]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        tag = _tag_of(node)
        if tag is not None:
            return path, tag
        if id(node) in seen or not isinstance(node, (dict, list)):
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((value, (*path, key)) for key, value in items)
        if isinstance(node, dict):
            stack.extend((key, path) for key in node if _tag_of(key) is not None)
    return None


def anchor_of(value: Any) -> str | None:
    """The anchor name a round-trip node carries, or None."""
    anchor = getattr(value, "anchor", None)
    return getattr(anchor, "value", None)


def plain(value: Any) -> Any:
    """Round-trip data as plain Python (ScalarInt -> int, ScalarBoolean -> bool, CommentedMap -> dict)."""
    if isinstance(value, ScalarBoolean):
        return bool(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass
class Edit:
    """One change made to a document, as told to the user."""

    path: KeyPath
    old: Any
    new: Any
    created: bool = False
    deleted: bool = False
    anchor: str | None = None
    aliases: list[str] = field(default_factory=list)   # other key paths whose value moved with this one
    reason: str = ""

    def describe(self) -> str:
        key = format_key_path(self.path)
        if self.deleted:
            text = f"{key}: removed (was {_show(self.old)})"
        elif self.created:
            text = f"{key}: added {_show(self.new)}"
        else:
            text = f"{key}: {_show(self.old)} -> {_show(self.new)}"
        if self.anchor:
            text += f"  [&{self.anchor}]"
        if self.aliases:
            text += f"; aliases moved too: {', '.join(self.aliases)}"
        if self.reason:
            text += f"  ({self.reason})"
        return text


def _show(value: Any) -> str:
    value = plain(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Constructor(RoundTripConstructor):
    """Booleans remember their spelling: MindFormers files mix `True` and `false`, and a round trip that
    rewrote every one of them would bury the real change in a diff."""

    def construct_yaml_sbool(self, node: Any) -> Any:
        value = SafeConstructor.construct_yaml_bool(self, node)
        out = ScalarBoolean(value, anchor=node.anchor) if node.anchor else ScalarBoolean(value)
        out._yaml_text = node.value
        return out


_Constructor.add_constructor("tag:yaml.org,2002:bool", _Constructor.construct_yaml_sbool)


class _Representer(RoundTripRepresenter):
    """Writes booleans as they were spelled, and None as `null` when the source file did (ruamel writes
    an empty value by default)."""

    null_word = ""

    def represent_none(self, data: Any) -> Any:
        if self.null_word:
            return self.represent_scalar("tag:yaml.org,2002:null", self.null_word)
        return super().represent_none(data)

    def represent_cased_bool(self, data: Any) -> Any:
        text = getattr(data, "_yaml_text", None)
        if text is None or (text.lower() == "true") != bool(data):
            return self.represent_scalar_bool(data)
        return self.represent_scalar("tag:yaml.org,2002:bool", text, anchor=data.yaml_anchor())


_Representer.add_representer(type(None), _Representer.represent_none)
_Representer.add_representer(ScalarBoolean, _Representer.represent_cased_bool)


def _cased_bool(value: bool, like: Any) -> Any:
    """A boolean spelled like `like` (True/true/TRUE), when `like` was a boolean read from the file."""
    text = getattr(like, "_yaml_text", None)
    new = ScalarBoolean(bool(value))
    if text:
        word = "true" if value else "false"
        new._yaml_text = word.upper() if text.isupper() else word.capitalize() if text[0].isupper() else word
    return new


class Document:
    """A MindFormers YAML file held as ruamel round-trip data, with anchor-aware edits."""

    def __init__(self, text: str, source: str = "<string>") -> None:
        self.source = source
        self.text = text
        check_brackets(text, source)
        self.yaml = _make_yaml(text)
        try:
            self.data = self.yaml.load(text)
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"not valid YAML: {problem}", file=source,
                              line=mark.line + 1 if mark else None,
                              fix="fix the YAML syntax at that line") from None
        except (RecursionError, ValueError) as exc:  # nesting; a value ruamel cannot build (5,000 digits)
            raise ConfigError(f"not valid YAML: {'nested too deeply' if isinstance(exc, RecursionError) else exc}",
                              file=source, fix="check the file") from None
        if not isinstance(self.data, CommentedMap):
            raise ConfigError("the top level must be a mapping of keys", file=source,
                              fix="a MindFormers config starts with keys such as `run_mode:`")
        check_bounds(self.data, source)   # aliases and nesting: every rule walks the data
        tagged = foreign_tag(self.data)
        if tagged is not None:
            path, tag = tagged
            raise ConfigError(f"carries the YAML tag {tag}: a config holds plain values (a python/object tag "
                              "asks the reader to run code)", file=source, key=format_key_path(path) or None,
                              line=self.line_of(path) if path else None,
                              fix="remove the tag and write the value itself")
        self.edits: list[Edit] = []

    @classmethod
    def from_path(cls, path: str | Path) -> Document:
        path = Path(path)
        return cls(read_text(path, "a MindFormers config", fix="check the path of the MindFormers YAML"), str(path))

    def dump(self) -> str:
        out = io.StringIO()
        self.yaml.dump(self.data, out)
        return out.getvalue()

    # -- reading -------------------------------------------------------------------------------------------

    def has(self, path: KeyPath) -> bool:
        try:
            self.get(path)
            return True
        except KeyError:
            return False

    def get(self, path: KeyPath, default: Any = KeyError) -> Any:
        """The value at `path`; raises KeyError (or returns `default`) when any part is missing."""
        node: Any = self.data
        for part in path:
            try:
                if isinstance(part, int):
                    if not isinstance(node, list):
                        raise KeyError(path)
                    node = node[part]
                else:
                    if not isinstance(node, dict):
                        raise KeyError(path)
                    node = node[part]
            except (KeyError, IndexError, TypeError):
                if default is KeyError:
                    raise KeyError(path) from None
                return default
        return node

    def line_of(self, path: KeyPath) -> int | None:
        """1-based line of the deepest existing part of `path`."""
        line = None
        node: Any = self.data
        for part in path:
            lc = getattr(node, "lc", None)
            try:
                if lc is not None:
                    line = (lc.item(part) if isinstance(part, int) else lc.key(part))[0] + 1
                node = node[part]
            except (KeyError, IndexError, TypeError, AttributeError):
                break
        return line

    def positions(self) -> Iterator[tuple[KeyPath, Any, Any, Key]]:
        """Every (path, value, container, key) in document order; shared collections are entered once."""
        entered: set[int] = set()

        def walk(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, Any, Any, Key]]:
            if id(node) in entered:
                return
            entered.add(id(node))
            if isinstance(node, CommentedMap):
                items = node.non_merged_items()   # keys pulled in by `<<: *x` belong to x, not here
            else:
                items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, value in items:
                yield path + (key,), value, node, key
                if isinstance(value, (dict, list)):
                    yield from walk(value, path + (key,))

        yield from walk(self.data, ())

    def alias_paths(self, path: KeyPath) -> list[KeyPath]:
        """Other key paths that reach the same value as `path` through anchors and aliases.

        Two ways: the value itself is an anchored scalar held at several positions, or a collection on the
        way down is anchored and aliased elsewhere (then the rest of the path repeats under each alias)."""
        value = self.get(path)
        same: list[KeyPath] = []
        if anchor_of(value) is not None and not isinstance(value, (dict, list)):
            same += [p for p, v, _, _ in self.positions() if v is value and p != path]
        return same + self._collection_alias_paths(path)

    # -- editing -------------------------------------------------------------------------------------------

    def set(self, path: KeyPath, value: Any, *, create: bool = False, reason: str = "") -> Edit:
        """Set the value at `path`, keeping the style and anchor of what was there.

        `create` allows a missing last key in an existing mapping (presets add keys the base file lacks);
        otherwise a missing key is an error with the closest existing names, so a typo never adds a key."""
        if not path:
            raise ConfigError("cannot replace the whole document", file=self.source)
        parent = self._parent(path, create=create)
        last = path[-1]
        if isinstance(parent, list):
            if not isinstance(last, int) or not -len(parent) <= last < len(parent):
                raise ConfigError(f"index {last} is out of range (the list has {len(parent)} entries)",
                                  file=self.source, key=format_key_path(path), line=self.line_of(path))
            old = parent[last]
        elif last in parent:
            old = parent[last]
        else:
            if not create:
                raise self._missing(path)
            new = _styled(value, None)
            holder = _trailing_comment_holder(parent) if isinstance(parent, CommentedMap) else None
            parent[last] = new
            if holder is not None:
                _move_trailing_comment(holder, parent, last)
            edit = Edit(path, None, new, created=True, reason=reason)
            self.edits.append(edit)
            return edit

        if _same(old, value):
            return Edit(path, old, old, reason="unchanged")
        edit = Edit(path, plain(old), value, reason=reason)
        anchor = anchor_of(old)
        if isinstance(old, list) and isinstance(value, list) and not isinstance(value, str):
            # In place: block/flow style, comments and any anchor on the list stay; aliases share the object.
            _update_list(old, value)
            edit.new = old
            edit.anchor = anchor
            edit.aliases = [format_key_path(p) for p in self.alias_paths(path)]
        elif isinstance(old, (dict, list)):
            new = _styled(value, old)
            edit.aliases = [format_key_path(p) for p in self.alias_paths(path)]
            if anchor is not None:
                new = _anchored(new, anchor)
                edit.anchor = anchor
                self._replace_everywhere(old, new)
            else:
                parent[last] = new
            edit.new = new
        else:
            new = _styled(value, old)
            if anchor is not None:
                new = _anchored(new, anchor)
                aliases = self.alias_paths(path)
                self._replace_everywhere(old, new)
                edit.anchor = anchor
                edit.aliases = [format_key_path(p) for p in aliases]
            else:
                parent[last] = new
                edit.aliases = [format_key_path(p) for p in self._collection_alias_paths(path)]
            edit.new = new
        self.edits.append(edit)
        return edit

    def delete(self, path: KeyPath, *, reason: str = "") -> Edit | None:
        """Remove a mapping key (its comment goes with it); None when it was not there."""
        try:
            parent = self.get(path[:-1])
        except KeyError:
            return None
        if not isinstance(parent, dict) or path[-1] not in parent:
            return None
        own = [k for k, _ in parent.non_merged_items()] if isinstance(parent, CommentedMap) else []
        holder = _trailing_comment_holder(parent) if own and own[-1] == path[-1] and len(own) > 1 else None
        old = parent.pop(path[-1])
        if holder is not None:
            # The next section's heading was attached to the removed key (or deep inside its value): keep it.
            token = holder[0].ca.items[holder[1]][2]
            rest = token.value.partition("\n")[2]
            if rest.strip():
                tail, key = _deepest_last(parent)
                entry = tail.ca.items.setdefault(key, [None, None, None, None])
                if entry[2] is not None:
                    entry[2].value = entry[2].value.rstrip("\n") + "\n" + rest
                else:
                    entry[2] = CommentToken("\n" + rest, token.start_mark, None)
        edit = Edit(path, old, None, deleted=True, reason=reason)
        self.edits.append(edit)
        return edit

    def _collection_alias_paths(self, path: KeyPath) -> list[KeyPath]:
        """Paths that reach `path` through an aliased collection above it: `*x` elsewhere, or a mapping
        that merges x (`<<: *x`) without overriding the key."""
        out: list[KeyPath] = []
        positions = list(self.positions())
        for depth in range(1, len(path)):
            obj = self.get(path[:depth])
            if not isinstance(obj, (dict, list)) or anchor_of(obj) is None:
                continue
            rest = path[depth:]
            out += [p + rest for p, v, _, _ in positions if v is obj and p != path[:depth]]
            for p, v, _, _ in [((), self.data, None, None), *positions]:
                merged = [m[1] if isinstance(m, tuple) else m  # (position, map) in older ruamel
                          for m in getattr(v, "merge", [])] if isinstance(v, CommentedMap) else []
                if any(m is obj for m in merged) and rest[0] not in getattr(v, "_ok", set()):
                    out.append(p + rest)
        return out

    def _replace_everywhere(self, old: Any, new: Any) -> list[KeyPath]:
        """Put `new` at every position holding the object `old` (identity); return those paths."""
        hits = [(p, container, key) for p, v, container, key in self.positions() if v is old]
        for _, container, key in hits:
            container[key] = new
        return [p for p, _, _ in hits]

    def _parent(self, path: KeyPath, *, create: bool) -> Any:
        node: Any = self.data
        for depth, part in enumerate(path[:-1]):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                if create and isinstance(node, dict) and isinstance(part, str):
                    node[part] = CommentedMap()
                    node = node[part]
                    continue
                raise self._missing(path[:depth + 1]) from None
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"is a {type(plain(node)).__name__}, not a mapping or list",
                                  file=self.source, key=format_key_path(path[:depth + 1]),
                                  line=self.line_of(path[:depth + 1]))
        return node

    def _missing(self, path: KeyPath) -> ConfigError:
        try:
            parent = self.get(path[:-1])
        except KeyError:
            parent = None
        fix = "use `--add KEY=VALUE` to add a key the file does not have"
        if isinstance(parent, dict):
            close = difflib.get_close_matches(str(path[-1]), [str(k) for k in parent], n=3)
            if close:
                fix = f"did you mean {', '.join(format_key_path(path[:-1] + (c,)) for c in close)}? ({fix})"
        return ConfigError("no such key in the base file", file=self.source, key=format_key_path(path),
                           line=self.line_of(path[:-1]) if path[:-1] else None, fix=fix)


def _trailing_comment_holder(node: Any) -> tuple[Any, Any] | None:
    """(collection, key) of the entry that carries the comment lines following `node` in the file.

    ruamel attaches the blank lines and `# next section` comments that follow a block to its deepest last
    entry. A key appended to `node` would be written after them, under the next section's heading."""
    found = None
    while isinstance(node, (CommentedMap, CommentedSeq)) and len(node):
        key = list(node.non_merged_items())[-1][0] if isinstance(node, CommentedMap) else len(node) - 1
        entry = node.ca.items.get(key)
        if entry and len(entry) > 2 and entry[2] is not None:
            found = (node, key)
        value = node[key]
        if isinstance(value, (CommentedMap, CommentedSeq)) and value.fa.flow_style():
            break
        node = value
    return found


def _deepest_last(node: Any) -> tuple[Any, Any]:
    """The last entry of a block collection, descending into block-style values: where the comment lines
    that follow the collection in the file belong."""
    while True:
        key = list(node.non_merged_items())[-1][0] if isinstance(node, CommentedMap) else len(node) - 1
        value = node[key]
        if not isinstance(value, (CommentedMap, CommentedSeq)) or not len(value) or value.fa.flow_style():
            return node, key
        node = value


def _move_trailing_comment(holder: tuple[Any, Any], mapping: CommentedMap, new_key: Any) -> None:
    """Keep the old last entry's end-of-line comment; give what follows it to the appended key."""
    node, key = holder
    token = node.ca.items[key][2]
    eol, _, rest = token.value.partition("\n")
    if not rest.strip():
        return
    if eol.strip():
        token.value = eol + "\n"
    else:
        node.ca.items[key][2] = None
    mapping.ca.items[new_key] = [None, None, CommentToken("\n" + rest, token.start_mark, None), None]


def _make_yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.Representer = _Representer
    yaml.Constructor = _Constructor
    yaml.preserve_quotes = True
    yaml.width = 1 << 16          # never re-wrap long values (chat templates, paths)
    yaml.indent(mapping=2, sequence=_sequence_indent(text), offset=_sequence_offset(text))
    # MindFormers files write True/False; ruamel would write true/false on every line otherwise.
    if re.search(r":\s+(True|False)\b", text) and not re.search(r":\s+(true|false)\b", text):
        yaml.boolean_representation = ["False", "True"]
    if re.search(r":\s+null\b", text):
        yaml.representer.null_word = "null"
    return yaml


def _sequence_offset(text: str) -> int:
    """Indentation of a block sequence's dash under its key, as the file writes it (2 in MindFormers)."""
    match = re.search(r"^( *)\S[^\n]*:\s*\n( *)- ", text, re.MULTILINE)
    return max(0, len(match.group(2)) - len(match.group(1))) if match else 2


def _sequence_indent(text: str) -> int:
    return _sequence_offset(text) + 2


def _same(old: Any, new: Any) -> bool:
    return type(plain(old)) is type(plain(new)) and plain(old) == plain(new)


def _as_rt(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, CommentedMap):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = _as_rt(v)
        return out
    if isinstance(value, list) and not isinstance(value, CommentedSeq):
        seq = CommentedSeq(_as_rt(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    return value


def _styled(value: Any, old: Any) -> Any:
    """`value` dressed like `old`: same quote style for strings, same flow/block style for lists."""
    if isinstance(value, str) and not isinstance(value, (DoubleQuotedScalarString, SingleQuotedScalarString)):
        if isinstance(old, DoubleQuotedScalarString):
            return DoubleQuotedScalarString(value)
        if isinstance(old, SingleQuotedScalarString):
            return SingleQuotedScalarString(value)
        return value
    if isinstance(value, bool) and isinstance(old, ScalarBoolean):
        return _cased_bool(value, old)
    if isinstance(value, list):
        seq = value if isinstance(value, CommentedSeq) else _as_rt(value)
        if isinstance(old, CommentedSeq):
            if old.fa.flow_style():
                seq.fa.set_flow_style()
            else:
                seq.fa.set_block_style()
        return seq
    return _as_rt(value)


def _anchored(value: Any, anchor: str) -> Any:
    """A scalar that carries `anchor`; plain Python scalars are wrapped in ruamel's scalar types."""
    if isinstance(value, ScalarBoolean):
        new = value
    elif isinstance(value, bool):
        new = ScalarBoolean(bool(value))
    elif isinstance(value, int):
        new = ScalarInt(int(value))
    elif isinstance(value, float):
        # ScalarFloat needs its print format (width, precision); reading the number back sets them.
        new = YAML(typ="rt").load(repr(float(value)))
        if not isinstance(new, ScalarFloat):
            new = YAML(typ="rt").load(f"{float(value):.6e}")
    elif isinstance(value, str):
        new = value if hasattr(value, "yaml_set_anchor") else _anchorable_str(value)
    elif isinstance(value, (CommentedSeq, CommentedMap)):
        new = value
    else:
        raise ConfigError(f"cannot keep anchor &{anchor} on a {type(value).__name__} value",
                          fix="give the key a number, string, boolean or list")
    new.yaml_set_anchor(anchor, always_dump=True)
    return new


def _anchorable_str(value: str) -> Any:
    from ruamel.yaml.scalarstring import PlainScalarString

    return PlainScalarString(value)


def _update_list(old: CommentedSeq, new: list) -> None:
    for index, item in enumerate(new):
        if index < len(old):
            if not _same(old[index], item):
                old[index] = _styled(item, old[index])
        else:
            old.append(_styled(item, old[index - 1] if index else None))
    del old[len(new):]

"""``objio plugins``: the installed storage backends, the schemes each serves, and those not in use."""

from __future__ import annotations

import argparse
from typing import Any

from objio import _host
from objio.cli._output import print_json, table

_EXAMPLES = """\
examples:
  objio plugins
  objio plugins --json
"""

# The built-in backends have no SCHEMES attribute to read: what each serves, in words.
_BUILT_IN = {
    "objio.local": "local paths, file://",
    "objio.memory": "memory://",
    "objio.fsspec-fallback": "any other fsspec protocol (best effort)",
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "plugins",
        parents=[common],
        help="installed storage backends, their schemes, and any that failed to load or are disabled",
        description="List the storage backends objio found (built in, and entry points in the 'objio' group), "
        "the URL schemes each serves, and any installed plugin that failed to load or is disabled, with the reason.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    manager = _host.get_plugin_manager()
    distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    backends = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist = distributions.get(id(plugin))
        schemes = getattr(plugin, "SCHEMES", None)
        backends.append(
            {
                "name": name,
                "schemes": ", ".join(f"{s}://" for s in schemes) if schemes else _BUILT_IN.get(name, "-"),
                "distribution": f"{dist.project_name} {dist.version}" if dist is not None else "built in",
            }
        )
    skipped = _host.skipped_plugins()
    if args.json:
        print_json({"backends": backends, "skipped": [plugin._asdict() for plugin in skipped]})
        return 0
    rows = [(b["name"], b["schemes"], b["distribution"]) for b in backends]
    print(table(rows, ["BACKEND", "SCHEMES", "FROM"]))
    for plugin in skipped:
        print(f"not in use: {plugin.describe()}")
    return 0

#!/usr/bin/env python3
"""Print the README's parameter table from the parameters the nodes declare (so the two cannot drift).

The localizer's configuration parameters come from the core dataclasses (semloc_ros.core.settings): their defaults
are the shipped configuration (config/semloc.yaml), their ranges the checks the nodes apply.
"""

from semloc_ros.ros import descriptor_node, localizer_node, segmentation_node


def table() -> str:
    rows = ["| node | parameter | default | valid | meaning |", "|---|---|---|---|---|"]
    for module in (segmentation_node, descriptor_node, localizer_node):
        node = module.__name__.rsplit(".", 1)[1]
        for spec in module.PARAMETERS:
            mutability = " (read-only)" if spec.read_only else ""
            valid = spec.valid_text.replace("|", "\\|")
            rows.append(f"| {node} | `{spec.name}` | `{spec.default!r}` | {valid} | {spec.description}{mutability} |")
    return "\n".join(rows)


def main() -> None:
    print(table())


if __name__ == "__main__":
    main()

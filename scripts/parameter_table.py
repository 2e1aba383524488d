#!/usr/bin/env python3
"""Print the README's parameter table from the parameters the nodes declare (so the two cannot drift)."""

from semloc_ros.ros import descriptor_node, localizer_node, segmentation_node


def main() -> None:
    print("| node | parameter | default | meaning |")
    print("|---|---|---|---|")
    for module in (segmentation_node, descriptor_node, localizer_node):
        node = module.__name__.rsplit(".", 1)[1]
        for spec in module.PARAMETERS:
            mutability = " (read-only)" if spec.read_only else ""
            print(f"| {node} | `{spec.name}` | `{spec.default!r}` | {spec.description}{mutability} |")


if __name__ == "__main__":
    main()

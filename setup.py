"""ament_python build of semloc_ros (also installs with plain pip, see scripts/setup.sh)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "semloc_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={package_name: ["data/*.json", "data/*/*", "data/*/*/*", "data/*/*/*/*", "data/*/*/*/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{package_name}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="semloc_ros maintainers",
    maintainer_email="semloc@example.org",
    description="Visual localization by image retrieval on semantic segmentation, as ROS 2 nodes.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "segmentation_node = semloc_ros.ros.segmentation_node:main",
            "descriptor_node = semloc_ros.ros.descriptor_node:main",
            "localizer_node = semloc_ros.ros.localizer_node:main",
            "semloc = semloc_ros.cli:main",
        ],
    },
)

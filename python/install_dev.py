# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Makes quantizers_infrastructure importable in place from the running interpreter's
environment: writes <site-packages>/quantizers_infrastructure.pth holding the absolute path of
this script's folder (python/). Idempotent; run it with the environment's python, e.g.
`.venv/bin/python python/install_dev.py`."""

import os
import sys
import sysconfig


def main() -> int:
    package_root = os.path.dirname(os.path.abspath(__file__))
    site_packages = sysconfig.get_paths()["purelib"]
    pth = os.path.join(site_packages, "quantizers_infrastructure.pth")
    content = package_root + "\n"
    try:
        with open(pth, encoding="utf-8") as f:
            if f.read() == content:
                print(f"{pth} already points to {package_root}")
                return 0
    except FileNotFoundError:
        pass
    with open(pth, "w", encoding="utf-8") as f:
        f.write(content)
    print(f"wrote {pth} -> {package_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

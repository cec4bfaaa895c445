"""python -m simulator.ctree --write README.md: regenerate the README's list of the functions from the C."""

import sys

from simulator.ctree.p2m import readme_block, write_readme

if len(sys.argv) > 2 and sys.argv[1] == "--write":
    write_readme(sys.argv[2])
else:
    print(readme_block())

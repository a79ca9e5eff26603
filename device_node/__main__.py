import sys

from persona_sim.cli import main

sys.exit(main(["devices", *sys.argv[1:]]))

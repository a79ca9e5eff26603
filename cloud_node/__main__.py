import sys

from persona_sim.cli import main

sys.exit(main(["cloud", *sys.argv[1:]]))

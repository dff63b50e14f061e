import sys

from training.train import main

main(sys.argv[1:])

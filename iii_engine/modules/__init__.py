"""Engine modules, one file each; ``base`` holds the contract they implement."""

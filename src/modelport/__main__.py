"""`python -m modelport`: the same command as the `modelport` console script."""

from modelport.cli import main

if __name__ == "__main__":
    main()

"""``python -m h2arn.course {run,check,summary,site}``: the notebook runner (see :mod:`h2arn.course.runner`)."""
import sys

from h2arn.course.runner import main

if __name__ == "__main__":
    sys.exit(main())

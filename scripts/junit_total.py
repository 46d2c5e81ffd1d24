"""Sum pytest JUnit XML reports into one closing line: 'total: N passed, N failed, N skipped'.

    python scripts/junit_total.py REPORT.xml [REPORT.xml ...]

Exit codes: 0 all passed, 1 a test failed or none passed, 2 a report is missing or not
JUnit XML (one line on stderr naming it).
"""
import argparse
import sys
import xml.etree.ElementTree as ET


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="pytest --junitxml files")
    args = parser.parse_args(argv)
    passed = failed = skipped = 0
    for path in args.reports:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as error:
            print(f"error: {path}: cannot read a JUnit report ({error})", file=sys.stderr)
            return 2
        for suite in root.iter("testsuite"):
            tests, errors = int(suite.get("tests", 0)), int(suite.get("errors", 0))
            fails, skips = int(suite.get("failures", 0)), int(suite.get("skipped", 0))
            passed += tests - errors - fails - skips
            failed += errors + fails
            skipped += skips
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

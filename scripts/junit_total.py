"""Sum pytest JUnit XML reports into one closing line: 'total: N passed, N failed, N skipped'."""
import sys
import xml.etree.ElementTree as ET


def main(paths: list) -> int:
    passed = failed = skipped = 0
    for path in paths:
        for suite in ET.parse(path).getroot().iter("testsuite"):
            tests, errors = int(suite.get("tests", 0)), int(suite.get("errors", 0))
            fails, skips = int(suite.get("failures", 0)), int(suite.get("skipped", 0))
            passed += tests - errors - fails - skips
            failed += errors + fails
            skipped += skips
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

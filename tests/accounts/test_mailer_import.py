"""The SMTP client is loaded with the first message only: smtplib and the email package are
~2.4 MiB of a process's memory (issue 13's idle RSS row), and a deployment without mail never
sends one. Sending itself is proven by the sign-up and email-change tests."""
from __future__ import annotations

import subprocess
import sys


def test_serving_modules_leave_smtplib_and_the_email_package_unloaded(tmp_path):
    code = (
        "import sys\n"
        "from kraken import app\n"
        "from kraken.accounts import email_change, mailer, signup\n"
        "from kraken.gateway.endpoints import account_email, account_signup\n"
        "print(sorted(m for m in sys.modules if m == 'smtplib' or m.split('.')[0] == 'email'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"

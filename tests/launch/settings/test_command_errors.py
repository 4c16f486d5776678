"""launch/settings/command_errors.py: user errors are one line and exit 2; real bugs keep their traceback."""

import click
import pytest

from launch.errors import UserError
from launch.settings.command_errors import Command, user_errors_exit


def command_raising(error: BaseException) -> click.Command:
    @click.command(cls=Command)
    @user_errors_exit
    def fails():
        raise error

    return fails


def test_a_user_error_is_one_line_and_exit_2():
    from click.testing import CliRunner

    result = CliRunner().invoke(command_raising(UserError("--lr is negative; give a positive --lr")))
    assert result.exit_code == 2 and result.stderr == "error: --lr is negative; give a positive --lr\n"


@pytest.mark.parametrize("bug", [KeyError("step"), TypeError("unsupported operand"), RuntimeError("shape mismatch")])
def test_a_real_bug_keeps_its_traceback(bug):
    """Not turned into a line that would hide where it happened: the exception leaves the command
    as it was raised, with its traceback (a RuntimeError too, unless it is an allocation failure)."""
    from click.testing import CliRunner

    result = CliRunner().invoke(command_raising(bug))
    assert result.exception is bug and result.exc_info[2] is not None and "error:" not in result.stderr

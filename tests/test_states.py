import pytest

from nbrunner.errors import InvalidTransition
from nbrunner.states import DONE, TRANSITIONS, RunStatus, check_transition


def test_every_state_has_a_row_and_done_states_are_final() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    for state in DONE:
        assert TRANSITIONS[state] == frozenset()


def test_queued_can_only_start_or_be_cancelled() -> None:
    check_transition(1, RunStatus.QUEUED, RunStatus.STARTING)
    check_transition(1, RunStatus.QUEUED, RunStatus.CANCELLED)
    with pytest.raises(InvalidTransition, match="run 1 is queued and cannot become running"):
        check_transition(1, RunStatus.QUEUED, RunStatus.RUNNING)


def test_refusal_from_an_ended_state_says_it_has_ended() -> None:
    with pytest.raises(InvalidTransition, match=r"nothing \(it has ended\)"):
        check_transition(7, RunStatus.SUCCEEDED, RunStatus.RUNNING)


def test_pause_and_resume_are_allowed_only_while_running() -> None:
    check_transition(1, RunStatus.RUNNING, RunStatus.PAUSED)
    check_transition(1, RunStatus.PAUSED, RunStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition(1, RunStatus.QUEUED, RunStatus.PAUSED)

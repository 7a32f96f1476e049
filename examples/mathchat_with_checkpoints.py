"""A three-agent math group chat that survives a crash and takes a second turn, with a checkpoint
after every step.

    python examples/mathchat_with_checkpoints.py            # offline: a scripted model, no key
    OPENAI_API_KEY=sk-... python examples/mathchat_with_checkpoints.py   # a real model (pip install 'autogen[openai]')

What it shows:

1. the chat runs and a checkpoint appears after every message; then the process "crashes" in the
   middle of the solver's second turn;
2. a restart (fresh agents, as a new process would build them) calls ``initiate_chat`` with the same
   problem: ``ResumePolicy.resume_latest()`` continues the interrupted run from its last checkpoint,
   nothing repeated;
3. a second question on the finished chat starts a new run with the whole transcript as history;
   the finished run is not rolled back (the Koog bug);
4. the whole chat is rebuilt from the last checkpoint alone (what ``persistency continue`` does).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import DEFAULT_URL, Persistency, ResumePolicy, provider_from_url, rebuild_chat, termination
from persistency.scripted import ScriptedModelClient, scripted_config

PROBLEM = "What is the sum of all integers from 1 to 100?"
FOLLOW_UP = "Now the sum of all integers from 1 to 200?"
SCRIPTS = {
    "solver": [
        "Pair the numbers from both ends: 1+100, 2+99, ..., 50+51. Every pair sums to 101.",
        "There are 100 / 2 = 50 pairs, so the sum is 50 * 101 = 5050.",
        "Same pairing: 1+200, 2+199, ..., 100+101. The 100 pairs each sum to 201: 100 * 201 = 20100.",
    ],
    "checker": [
        "The pairing uses every number exactly once. Go on.",
        "Verified with n(n+1)/2 = 100 * 101 / 2 = 5050. SOLUTION_FOUND: 5050",
        "Verified: 200 * 201 / 2 = 20100. SOLUTION_FOUND: 20100",
    ],
}
SYSTEM = {
    "solver": "You solve math problems step by step, one short step per turn.",
    "checker": "You check the solver's last step. When the answer is certain, write SOLUTION_FOUND: <answer>.",
}


class SimulatedCrash(RuntimeError):
    """Stands for the process dying (power cut, OOM kill, deploy) in the middle of a turn."""


def llm_config_for(name: str) -> Any:
    """The real model when OPENAI_API_KEY is set; otherwise the offline scripted one."""
    if os.environ.get("OPENAI_API_KEY"):
        return {
            "config_list": [
                {"model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), "api_key": os.environ["OPENAI_API_KEY"]}
            ],
            "temperature": 0,
        }
    return scripted_config(SCRIPTS[name])


def build_chat(*, crash_in_second_turn: bool = False) -> tuple[ConversableAgent, GroupChatManager]:
    """The student (who asks), a solver and a checker, speaking in turn."""
    student = ConversableAgent(
        "student",
        llm_config=False,
        human_input_mode="NEVER",
        default_auto_reply="Please continue.",
        description="Asks the questions.",
    )
    experts = []
    for name in ("solver", "checker"):
        agent = ConversableAgent(
            name, system_message=SYSTEM[name], llm_config=llm_config_for(name), human_input_mode="NEVER"
        )
        if not os.environ.get("OPENAI_API_KEY"):
            agent.register_model_client(ScriptedModelClient)
        experts.append(agent)
    if crash_in_second_turn:
        armed = {"on": True}

        def crash(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
            if armed["on"] and len(messages or []) == 4:
                armed["on"] = False
                raise SimulatedCrash("the process died while the solver was thinking")
            return False, None

        experts[0].register_reply([Agent, None], crash, position=0)
    groupchat = GroupChat([student, *experts], messages=[], max_round=10, speaker_selection_method="round_robin")
    manager = GroupChatManager(
        groupchat,
        name="manager",
        llm_config=False,
        silent=True,
        is_termination_msg=termination.contains("SOLUTION_FOUND"),
    )
    return student, manager


def show_checkpoints(persistency: Persistency, title: str) -> None:
    print(f"\n  checkpoints after {title}:")
    for info in persistency.checkpoints():
        end = f"  <- run end: {info.end_reason}" if info.kind == "run_end" else ""
        print(f"    {info.checkpoint_id:22} {info.run_id}  step {info.step:2}{end}")


def show_transcript(manager: GroupChatManager, since: int = 0) -> None:
    for i, message in enumerate(manager.groupchat.messages[since:], start=since + 1):
        print(f"    {i:2}. {message.get('name')}: {message.get('content')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--store", default=None, help=f"storage URL or folder (default: $PERSISTENCY_URL, else {DEFAULT_URL})"
    )
    parser.add_argument("--session", default="mathchat-demo")
    args = parser.parse_args(argv)
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)  # "custom model client detected"
    mode = "OpenAI" if os.environ.get("OPENAI_API_KEY") else "offline (scripted model)"
    if os.environ.get("OPENAI_API_KEY"):
        try:
            import openai  # noqa: F401
        except ImportError:
            print(
                "OPENAI_API_KEY is set but the openai client is not installed: pip install 'autogen[openai]'"
                " (or unset OPENAI_API_KEY to run offline)",
                file=sys.stderr,
            )
            return 2
    provider = provider_from_url(args.store)
    provider.delete_session(args.session)  # a fresh demo every time
    store = args.store or os.environ.get("PERSISTENCY_URL") or DEFAULT_URL
    print(f"Model: {mode}.  Storage: {store}  Session: {args.session}")

    print("\n1. A chat that crashes in the middle of the solver's second turn")
    student, manager = build_chat(crash_in_second_turn=True)
    persistency = Persistency(
        provider, args.session, policy=ResumePolicy.resume_latest(), metadata={"problem": PROBLEM}
    ).attach(manager)
    try:
        student.initiate_chat(manager, message=PROBLEM, silent=True)
    except SimulatedCrash as exc:
        print(f"  crashed: {exc}")
    show_transcript(manager)
    show_checkpoints(persistency, "the crash")

    print("\n2. A restart: fresh agents, the same problem -> the interrupted run continues")
    student, manager = build_chat()
    persistency = Persistency(provider, args.session, metadata={"problem": PROBLEM}).attach(manager)
    student.initiate_chat(manager, message=PROBLEM, silent=True)
    show_transcript(manager)
    latest = persistency.latest()
    assert latest is not None
    print(f"  run {latest.run_id} ended: {latest.end_reason} after {latest.manager_state['rounds_used']} rounds")

    print("\n3. A second question on the finished chat -> a new run with the whole transcript as history")
    before = len(manager.groupchat.messages)
    # clear_history=False keeps the transcript, as in plain AG2 (the default True would start afresh).
    student.initiate_chat(manager, message=FOLLOW_UP, silent=True, clear_history=False)
    show_transcript(manager, since=before)
    show_checkpoints(persistency, "the second turn")

    print("\n4. The chat rebuilt from the last checkpoint alone (no code of ours needed)")
    latest = persistency.latest()
    assert latest is not None
    chat = rebuild_chat(latest, model_clients=[ScriptedModelClient])
    print(
        f"  agents: {', '.join(chat.agents)}; manager: {chat.manager.name}; "
        f"{len(chat.groupchat.messages)} messages restored; "
        f"termination: {latest.manager_state['termination']}"
    )
    persistency.detach()
    return 0


if __name__ == "__main__":
    sys.exit(main())

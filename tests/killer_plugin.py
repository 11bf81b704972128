"""A trainer plugin that SIGKILLs its own process in iteration $KILL_AT_ITERATION, for the resume tests.

Written to a file and loaded with ``--plugin FILE`` by the tests that kill a run mid-way and resume it.
"""

import textwrap

KILLER = textwrap.dedent('''
    import os
    import signal

    from harness import hookimpl
    from plugins.trainers.native import NativeDPOTrainer


    class KillerTrainer(NativeDPOTrainer):
        name = "native_killer"
        description = "native DPO that SIGKILLs its own process in iteration $KILL_AT_ITERATION"
        calls = 0

        def train(self, *, policy, data, rng):
            type(self).calls += 1
            if os.environ.get("KILL_AT_ITERATION") == str(type(self).calls):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().train(policy=policy, data=data, rng=rng)


    @hookimpl
    def register_trainers(register):
        register(KillerTrainer)
''')

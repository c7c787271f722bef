%% Process figures (etsmgr's counterparts: process_benchmark's BM_SpawnLinkKillExitSignal and
%% BM_PingPongOneScheduler, executor_benchmark's BM_CrossSchedulerPingPong).
-module(otp_bench_procs).
-export([spawn_link_kill/1, ping_pong_one_scheduler/1, ping_pong_two_schedulers/1]).

%% spawn_link a process that waits, kill it, receive its {'EXIT', Pid, killed}.
spawn_link_kill(Cycles) ->
    Old = process_flag(trap_exit, true),
    Start = erlang:monotonic_time(nanosecond),
    cycle(Cycles),
    Elapsed = erlang:monotonic_time(nanosecond) - Start,
    process_flag(trap_exit, Old),
    [{spawn_link_kill_exit, items_per_second, Cycles * 1.0e9 / Elapsed, "/s"}].

cycle(0) -> ok;
cycle(N) ->
    Pid = spawn_link(fun() -> receive go -> ok end end),
    exit(Pid, kill),
    receive {'EXIT', Pid, killed} -> ok end,
    cycle(N - 1).

%% Round trips between two processes with one scheduler online.
ping_pong_one_scheduler(Rounds) ->
    Online = erlang:system_flag(schedulers_online, 1),
    Rate = ping_pong(Rounds, [], []),
    erlang:system_flag(schedulers_online, Online),
    [{ping_pong_one_scheduler, items_per_second, Rate, "/s"}].

%% Round trips between two processes bound to schedulers 1 and 2 ({scheduler, N} of spawn_opt).
ping_pong_two_schedulers(Rounds) ->
    2 = erlang:system_info(schedulers_online),
    Rate = ping_pong(Rounds, [{scheduler, 1}], [{scheduler, 2}]),
    [{ping_pong_two_schedulers, items_per_second, Rate, "/s"}].

ping_pong(Rounds, PingOpts, PongOpts) ->
    Self = self(),
    Ponger = spawn_opt(fun pong/0, PongOpts),
    Pinger = spawn_opt(fun() ->
                               Start = erlang:monotonic_time(nanosecond),
                               ping(Ponger, Rounds),
                               Self ! {elapsed, erlang:monotonic_time(nanosecond) - Start}
                       end, PingOpts),
    Elapsed = receive {elapsed, E} -> E end,
    exit(Ponger, kill),
    _ = Pinger,
    Rounds * 1.0e9 / Elapsed.

ping(_Ponger, 0) -> ok;
ping(Ponger, N) ->
    Ponger ! {ping, self()},
    receive pong -> ok end,
    ping(Ponger, N - 1).

pong() ->
    receive {ping, From} -> From ! pong end,
    pong().

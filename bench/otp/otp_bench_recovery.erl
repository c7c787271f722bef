%% Recovery of a killed table owner through a plain OTP heir (etsmgr's counterpart:
%% manager_benchmark's BM_RecoveryAfterOwnerKill, which goes through the table manager).
%%
%% A supervisor (one_for_one) runs otp_bench_owner, a gen_server that traps exits. Its table's
%% heir is a registered process, otp_bench_heir, that holds the table while the owner is down and
%% gives it back (ets:give_away) when the restarted owner asks in its init. The probe kills the
%% owner (exit(Pid, kill)) and waits for the new owner's {up, Pid, Value}: the latency is kill ->
%% restarted -> table back with its data.
-module(otp_bench_recovery).
-behaviour(supervisor).
-export([run/2]).
-export([init/1]).

-define(HEIR, otp_bench_heir).

run(Kills, SamplesDir) ->
    Heir = spawn(fun() -> heir(never_created) end),
    true = register(?HEIR, Heir),
    {ok, Sup} = supervisor:start_link(?MODULE, self()),
    Owner = receive {up, Pid, 42} -> Pid end,
    Samples = kill_loop(Owner, Kills, []),
    unlink(Sup),
    ok = gen_server:stop(Sup),
    exit(Heir, kill),
    write_samples(SamplesDir, Samples),
    Sorted = lists:sort(Samples),
    [{recovery_after_owner_kill, p50_us, percentile(Sorted, 0.5) / 1000, "us"},
     {recovery_after_owner_kill, p99_us, percentile(Sorted, 0.99) / 1000, "us"}].

kill_loop(_Owner, 0, Samples) -> Samples;
kill_loop(Owner, N, Samples) ->
    Start = erlang:monotonic_time(nanosecond),
    exit(Owner, kill),
    receive
        {up, Next, Value} ->
            Elapsed = erlang:monotonic_time(nanosecond) - Start,
            42 = Value,
            kill_loop(Next, N - 1, [Elapsed | Samples])
    end.

init(Probe) ->
    Flags = #{strategy => one_for_one, intensity => 1000000000, period => 1},
    Owner = #{id => owner, start => {otp_bench_owner, start_link, [Probe, ?HEIR]},
              restart => permanent, shutdown => 1000, type => worker},
    {ok, {Flags, [Owner]}}.

%% The heir: tells the first owner there is no table yet; afterwards every owner that asks gets
%% the table back, once the dead owner's 'ETS-TRANSFER' has arrived (a selective receive).
heir(State) ->
    receive
        {give_back, Pid} when State =:= never_created ->
            Pid ! no_table,
            heir(lent);
        {give_back, Pid} ->
            Tab = receive {'ETS-TRANSFER', T, _From, _Data} -> T end,
            true = ets:give_away(Tab, Pid, back),
            heir(lent)
    end.

%% Nearest rank, as etsmgr's bench::Percentile: the element at floor(P * (N - 1)).
percentile(Sorted, P) ->
    lists:nth(trunc(P * (length(Sorted) - 1)) + 1, Sorted).

write_samples(none, _Samples) -> ok;
write_samples(Dir, Samples) ->
    Lines = [[integer_to_list(S), $\n] || S <- lists:reverse(Samples)],
    ok = file:write_file(filename:join(Dir, "otp_recovery_ns.samples"), Lines, [append]).

%% The Erlang/OTP reference suite of tools/bench.sh: the same workloads as etsmgr's benchmark
%% binaries, measured on the same machine in the same invocation, so the report can give ratios.
%%
%%   erlc -o OUT bench/otp/*.erl
%%   erl -noshell +S 2 -pa OUT -run otp_bench main full|quick GROUP [SAMPLES_DIR]
%%
%% GROUP is `all` or the etsmgr benchmark binary whose figures a group pairs with: `process`
%% (gen_server call, spawn_link + kill + 'EXIT', ping-pong on one scheduler), `table`
%% (update_counter on one key from 1 and 2 processes, 1M-key set insert and lookup, memory per
%% entry), `manager` (recovery of a killed owner through a plain heir) and `executor` (ping-pong
%% across two schedulers); tools/bench.sh runs each group just before its binary.
%%
%% Prints one line per figure, key=value separated by spaces:
%%   figure=gen_server_call counter=items_per_second value=842000.0 unit=/s
%% and a first line `info otp_release=25 erts=13.1.5 schedulers=2`. With SAMPLES_DIR, the
%% recovery latencies (ns, one per line) are appended to SAMPLES_DIR/otp_recovery_ns.samples.
%% The logger is silenced (the recovery benchmark's supervisor would log every restart).
%% `quick` shrinks every workload (for testing the plumbing; its figures mean nothing).
%% Halts with status 1 when a sanity check fails (a wrong reply, a lost table, a missing key).
-module(otp_bench).
-export([main/1]).

main([Mode, Group | Rest]) ->
    Quick = case Mode of
                "quick" -> true;
                "full" -> false
            end,
    SamplesDir = case Rest of
                     [Dir | _] -> Dir;
                     [] -> none
                 end,
    %% Quiet, as etsmgr's benchmarks (errors only there; here not even the supervisor's
    %% report per restart, which is an error report).
    ok = logger:set_primary_config(level, none),
    io:format("info otp_release=~s erts=~s schedulers=~b~n",
              [erlang:system_info(otp_release), erlang:system_info(version),
               erlang:system_info(schedulers)]),
    Size = fun(Full, Small) -> case Quick of true -> Small; false -> Full end end,
    All =
        [{process, fun() -> otp_bench_call:run(Size(200000, 4000)) end},
         {process, fun() -> otp_bench_procs:spawn_link_kill(Size(100000, 2000)) end},
         {process, fun() -> otp_bench_procs:ping_pong_one_scheduler(Size(1000000, 20000)) end},
         {table, fun() -> otp_bench_ets:update_counter_one_key(1, Size(5000000, 20000)) end},
         {table, fun() -> otp_bench_ets:update_counter_one_key(2, Size(2500000, 10000)) end},
         {table, fun() -> otp_bench_ets:set_1m(Size(1000000, 20000), Size(5, 1)) end},
         {manager, fun() -> otp_bench_recovery:run(Size(20000, 200), SamplesDir) end},
         {executor, fun() -> otp_bench_procs:ping_pong_two_schedulers(Size(200000, 4000)) end}],
    Benchmarks = [Run || {G, Run} <- All, Group =:= "all" orelse atom_to_list(G) =:= Group],
    Benchmarks =/= [] orelse error({unknown_group, Group}),
    Status = try
                 lists:foreach(fun(Run) -> print(Run()) end, Benchmarks),
                 0
             catch
                 Class:Reason:Stack ->
                     io:format(standard_error, "otp_bench: ~p:~p~n~p~n", [Class, Reason, Stack]),
                     1
             end,
    halt(Status).

%% Figures: [{Figure, Counter, Value, Unit}].
print(Figures) ->
    lists:foreach(
      fun({Figure, Counter, Value, Unit}) ->
              io:format("figure=~s counter=~s value=~.6e unit=~s~n",
                        [Figure, Counter, float(Value), Unit])
      end, Figures).

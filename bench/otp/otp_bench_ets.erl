%% ETS figures (etsmgr's counterparts: table_benchmark's BM_UpdateCounterOneKey threads:1/2,
%% BM_SetInsert1M, BM_SetLookup1M threads:1 and BM_MemoryPerEntry).
-module(otp_bench_ets).
-export([update_counter_one_key/2, set_1m/2]).

%% ets:update_counter on one key of a public set ({write_concurrency, true}) from Procs processes,
%% each doing PerProc updates; the rate is the total over the wall time from the start signal to
%% the last process done.
update_counter_one_key(Procs, PerProc) ->
    Tab = ets:new(otp_bench_counter, [set, public, {write_concurrency, true}]),
    true = ets:insert(Tab, {1, 0}),
    Self = self(),
    Workers = [spawn_link(fun() -> receive go -> ok end,
                                   count(Tab, PerProc),
                                   Self ! {done, self()}
                          end) || _ <- lists:seq(1, Procs)],
    Start = erlang:monotonic_time(nanosecond),
    [W ! go || W <- Workers],
    [receive {done, W} -> ok end || W <- Workers],
    Elapsed = erlang:monotonic_time(nanosecond) - Start,
    Total = Procs * PerProc,
    [{1, Total}] = ets:lookup(Tab, 1),
    ets:delete(Tab),
    Figure = list_to_atom("update_counter_one_key_" ++ integer_to_list(Procs) ++ "_procs"),
    [{Figure, items_per_second, Total * 1.0e9 / Elapsed, "/s"}].

count(_Tab, 0) -> ok;
count(Tab, N) ->
    ets:update_counter(Tab, 1, 1),
    count(Tab, N - 1).

%% A set of N random integer keys (below 2^59, so they stay immediate integers; etsmgr's are
%% random int64): inserting all of them into a new table, and looking each up once in a shuffled
%% order, each the median of Passes passes; memory per entry from the first pass.
set_1m(N, Passes) ->
    rand:seed(exsss, {20, 20, 20}),
    Keys = lists:usort([rand:uniform(1 bsl 59) || _ <- lists:seq(1, N)]),
    Count = length(Keys),
    Shuffled = [K || {_, K} <- lists:sort([{rand:uniform(), K} || K <- Keys])],
    Inserts = [insert_pass(Keys, Count) || _ <- lists:seq(1, Passes)],
    {_, EtsBytes, InfoBytes} = hd(Inserts),
    Tab = ets:new(otp_bench_set, [set, public]),
    true = ets:insert(Tab, [{K, K} || K <- Keys]),
    Lookups = [lookup_pass(Tab, Shuffled, Count) || _ <- lists:seq(1, Passes)],
    ets:delete(Tab),
    [{set_insert_1m, items_per_second, median([R || {R, _, _} <- Inserts]), "/s"},
     {set_lookup_1m, items_per_second, median(Lookups), "/s"},
     {memory_per_entry, bytes_per_entry, EtsBytes / Count, "B"},
     {memory_per_entry, info_memory_per_entry, InfoBytes / Count, "B"}].

%% {rate, erlang:memory(ets) growth, the table's own ets:info(memory) in bytes}.
insert_pass(Keys, Count) ->
    Before = erlang:memory(ets),
    Tab = ets:new(otp_bench_set, [set, public]),
    Start = erlang:monotonic_time(nanosecond),
    insert(Tab, Keys),
    Elapsed = erlang:monotonic_time(nanosecond) - Start,
    Grown = erlang:memory(ets) - Before,
    Info = ets:info(Tab, memory) * erlang:system_info(wordsize),
    Count = ets:info(Tab, size),
    ets:delete(Tab),
    {Count * 1.0e9 / Elapsed, Grown, Info}.

insert(_Tab, []) -> ok;
insert(Tab, [K | Rest]) ->
    true = ets:insert(Tab, {K, K}),
    insert(Tab, Rest).

lookup_pass(Tab, Shuffled, Count) ->
    Start = erlang:monotonic_time(nanosecond),
    Count = lookup(Tab, Shuffled, 0),
    Elapsed = erlang:monotonic_time(nanosecond) - Start,
    Count * 1.0e9 / Elapsed.

lookup(_Tab, [], Hits) -> Hits;
lookup(Tab, [K | Rest], Hits) ->
    case ets:lookup(Tab, K) of
        [{K, K}] -> lookup(Tab, Rest, Hits + 1);
        [] -> lookup(Tab, Rest, Hits)
    end.

%% The lower middle, as etsmgr's report.
median(Values) ->
    Sorted = lists:sort(Values),
    lists:nth((length(Sorted) - 1) div 2 + 1, Sorted).

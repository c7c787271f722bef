%% gen_server:call round trip: one client, one server on the same node (etsmgr's counterpart:
%% process_benchmark's BM_CallRoundTrip, Call<int> of an Add request).
-module(otp_bench_call).
-behaviour(gen_server).
-export([run/1]).
-export([init/1, handle_call/3, handle_cast/2]).

run(Calls) ->
    {ok, Server} = gen_server:start(?MODULE, [], []),
    Start = erlang:monotonic_time(nanosecond),
    loop(Server, 0, Calls),
    Elapsed = erlang:monotonic_time(nanosecond) - Start,
    gen_server:stop(Server),
    [{gen_server_call, items_per_second, Calls * 1.0e9 / Elapsed, "/s"}].

loop(_Server, N, N) -> ok;
loop(Server, I, N) ->
    I1 = I + 1,
    I1 = gen_server:call(Server, {add, I, 1}),
    loop(Server, I1, N).

init([]) -> {ok, nostate}.
handle_call({add, A, B}, _From, State) -> {reply, A + B, State}.
handle_cast(_Msg, State) -> {noreply, State}.

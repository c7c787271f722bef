%% The table owner of otp_bench_recovery: a gen_server that traps exits, takes its table back
%% from the heir in init (or creates it the first time) and tells the probe it is up.
-module(otp_bench_owner).
-behaviour(gen_server).
-export([start_link/2]).
-export([init/1, handle_call/3, handle_cast/2]).

start_link(Probe, Heir) -> gen_server:start_link(?MODULE, {Probe, Heir}, []).

init({Probe, HeirName}) ->
    process_flag(trap_exit, true),
    Heir = whereis(HeirName),
    Heir ! {give_back, self()},
    Tab = receive
              {'ETS-TRANSFER', T, Heir, back} ->
                  T;
              no_table ->
                  T = ets:new(otp_bench_state, [set, protected]),
                  true = ets:insert(T, {1, 42}),
                  T
          end,
    true = ets:setopts(Tab, {heir, Heir, owner_down}),
    [{1, Value}] = ets:lookup(Tab, 1),
    Probe ! {up, self(), Value},
    {ok, Tab}.

handle_call(_Request, _From, Tab) -> {reply, ok, Tab}.
handle_cast(_Msg, Tab) -> {noreply, Tab}.

%% Erlang/OTP distribution between two nodes, the comparison of `flotilla-remote-bench`.
%%
%% The same protocol as the Flotilla and raw-TCP subjects: the driver sends N 100-byte binaries
%% to a counting process on the peer node (held back only by distribution's own flow control: a
%% sender to a busy distribution port is suspended), then announces the total and waits for the
%% count; then R sequential echoes of a 100-byte binary. It prints
%% `result N Nanos P50Nanos P99Nanos`.
-module(flotilla_dist_bench).
-export([peer/0, driver/1]).

peer() ->
    register(counter, self()),
    io:format("ready~n"),
    receive {hello, Driver} -> peer_loop(Driver, 0) end.

peer_loop(Driver, Count) ->
    receive
        {count, _Bin} ->
            peer_loop(Driver, Count + 1);
        {total, N} ->
            Driver ! {done, Count, N},
            peer_loop(Driver, 0);
        {echo, Bin} ->
            Driver ! {echo, Bin},
            peer_loop(Driver, Count)
    end.

%% Halts in every case, so the benchmark never waits on a node that crashed.
driver(Args) ->
    try run(Args) of
        ok -> halt(0)
    catch
        Class:Reason:Stack ->
            io:format("error ~p~n", [{Class, Reason, Stack}]),
            halt(1)
    end.

run([PeerName, NStr, RStr]) ->
    Node = list_to_atom(PeerName),
    N = list_to_integer(NStr),
    R = list_to_integer(RStr),
    true = net_kernel:connect_node(Node),
    Peer = {counter, Node},
    Peer ! {hello, self()},
    Bin = binary:copy(<<7>>, 100),
    Peer ! {echo, Bin},
    receive {echo, _} -> ok end,
    T0 = erlang:monotonic_time(nanosecond),
    send_loop(Peer, Bin, N),
    Peer ! {total, N},
    wait_done(),
    Took = erlang:monotonic_time(nanosecond) - T0,
    Rtts = lists:sort([rtt(Peer, Bin) || _ <- lists:seq(1, R)]),
    io:format("result ~b ~b ~b ~b~n", [N, Took, nth(Rtts, R, 0.5), nth(Rtts, R, 0.99)]).

send_loop(_Peer, _Bin, 0) ->
    ok;
send_loop(Peer, Bin, Left) ->
    Peer ! {count, Bin},
    send_loop(Peer, Bin, Left - 1).

wait_done() ->
    receive
        {done, N, N} -> ok;
        {done, C, N} -> erlang:error({counted, C, expected, N})
    end.

rtt(Peer, Bin) ->
    T = erlang:monotonic_time(nanosecond),
    Peer ! {echo, Bin},
    receive {echo, _} -> erlang:monotonic_time(nanosecond) - T end.

nth(Sorted, Len, Q) ->
    lists:nth(round((Len - 1) * Q) + 1, Sorted).

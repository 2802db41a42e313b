// Command relay is the cheapest extra hop there is: it accepts TCP
// connections and copies bytes both ways to one upstream address, one
// upstream connection per client connection, without looking at them.
// Put it between a client and a servant to measure what one more loopback
// hop costs on a machine, apart from anything a balancer does:
//
//	go run ./examples/benchmarks/relay -listen 127.0.0.1:6990 -to 127.0.0.1:6981
//	mserve bench -c 1 -addr MSERVE -direct 127.0.0.1:6981 -vs relay=127.0.0.1:6990 echo x
package main

import (
	"flag"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:6990", "address to accept on")
	to := flag.String("to", "", "upstream host:port")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relay(c, *to)
	}
}

// relay copies between c and a new connection to upstream until either
// side closes.
func relay(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		log.Print(err)
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(u, c)
	go cp(c, u)
	<-done
	<-done
}

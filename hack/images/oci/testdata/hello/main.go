// Command hello is the small binary the image builder's tests put in an image.
package main

import "fmt"

func main() { fmt.Println("hello from an egressd test image") }

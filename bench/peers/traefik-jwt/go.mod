module github.com/flowgate/benchjwt

go 1.22
